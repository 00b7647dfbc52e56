"""Model cards, loading, normalisation and output transforms."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ecg2age_dicom.errors import ModelError
from ecg2age_dicom.model import (
    CardInput,
    CardOutput,
    ModelRuntime,
    configure_tensorflow,
    load_card,
    normalize,
    sha256_of,
    years_from_output,
)
from tests.model_factory import ml4h_like_model, tiny_model, write_card

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    return tiny_model(folder / "tiny.keras")


# -- cards ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ECG2Age", "ECG2Age-PTBXL"])
def test_shipped_cards_parse(name):
    card = load_card(ROOT / "model_zoo" / name / "model.toml")
    assert card.name == name
    assert card.input.sampling_rate_hz == 500 and card.input.samples == 5000
    assert card.input.leads[:3] == ("I", "II", "III")
    assert card.input.normalization == "per_lead_zscore"
    assert card.output.units == "a"
    assert not card.validated_for_clinical_use
    assert "not validated for clinical use" in card.clinical_use_warning


def test_real_ecg2age_card_describes_the_ml4h_file():
    card = load_card(ROOT / "model_zoo" / "ECG2Age" / "model.toml")
    assert card.sha256 == "f840659e9c7c694ecbc7b6217cc66ec0d1450d5644e5d90f3a030fd0e48b2e8c"
    assert card.size_bytes == 398_462_559
    assert (card.output.scale, card.output.offset) == (1.0, 0.0)
    assert "ml4h" in card.source_url and card.source_url.endswith("ECG2Age.keras")


def test_default_card_holds_measured_test_metrics():
    card = load_card(ROOT / "model_zoo" / "ECG2Age-PTBXL" / "model.toml")
    test = card.metrics["ptbxl_test"]
    assert test.n == 4259 and test.mae is not None and test.pearson_r is not None
    assert card.path.is_file() and sha256_of(card.path) == card.sha256
    assert card.path.stat().st_size == card.size_bytes <= 20_000_000


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("colour = 'red'\n", "colour: unknown key"),
        ("[input]\nnormalization = 'minmax'\n", "input.normalization"),
        ("[output]\nunits = 'months'\n", "output.units"),
        ("[metrics.x]\nn = 0\n", "metrics.x.n"),
        (
            "[age_gap]\nmethod = 'linear'\ncoefficients = [1.0]\nfitted_on = 'x'\n",
            "a linear correction has 2 coefficients",
        ),
        ("[age_gap]\nmethod = 'cubic'\ncoefficients = [1, 2, 3, 4]\nfitted_on = 'x'\n", "method"),
    ],
)
def test_card_errors_name_the_key(tmp_path, tiny, extra, message):
    card = write_card(tmp_path, tiny, extra)
    with pytest.raises(ModelError) as caught:
        load_card(card)
    assert message in caught.value.reason and str(card) in caught.value.reason


def test_missing_card_and_bad_sha_format(tmp_path, tiny):
    with pytest.raises(ModelError, match="does not exist"):
        load_card(tmp_path / "absent.toml")
    with pytest.raises(ModelError, match="sha256"):
        load_card(write_card(tmp_path, tiny, sha="not-a-sha"))


# -- loading -------------------------------------------------------------------------------


def test_sha_mismatch_is_refused_unless_disabled(tmp_path, tiny):
    shutil.copy(tiny, tmp_path / "tiny.keras")
    card = write_card(tmp_path, tiny, sha="0" * 64)
    with pytest.raises(ModelError, match="refusing to load"):
        ModelRuntime.load(card)
    runtime = ModelRuntime.load(card, verify_sha256=False)
    assert runtime.predict(np.ones((1, 5000, 12), np.float32)).shape == (1,)


def test_missing_model_file_says_how_to_get_it(tmp_path, tiny):
    card = write_card(tmp_path, tiny)  # the card points at tmp_path/tiny.keras: not there
    with pytest.raises(ModelError, match="model fetch"):
        ModelRuntime.load(card)


def test_runtime_applies_normalisation_and_output_transform(tmp_path, tiny):
    shutil.copy(tiny, tmp_path / "tiny.keras")
    extra = "[input]\nnormalization = 'scale'\nscale = 0.001\n[output]\nscale = 2.0\noffset = 50\n"
    runtime = ModelRuntime.load(write_card(tmp_path, tiny, extra))
    batch = np.full((3, 5000, 12), 1000.0, np.float32) * np.array([1, 2, 3])[:, None, None]
    # The tiny model sums the 12 lead means (weights 1, bias 0): 12 * mean after x 0.001.
    np.testing.assert_allclose(runtime.predict(batch), [74.0, 98.0, 122.0], rtol=1e-5)
    with pytest.raises(ModelError, match="does not match"):
        runtime.predict(np.zeros((1, 2500, 12), np.float32))


def test_dict_output_model_with_key(tmp_path):
    model = tiny_model(tmp_path / "tiny.keras", outputs="dict")
    runtime = ModelRuntime.load(write_card(tmp_path, model, "[output]\nkey = 'age'\n"))
    batch = np.zeros((2, 5000, 12), np.float32)
    batch[1] += np.arange(5000, dtype=np.float32)[:, None] % 7  # any non-flat signal
    np.testing.assert_allclose(runtime.predict(batch), [0.0, 0.0], atol=1e-4)  # z-scored: mean 0
    # Ambiguous outputs are refused at load time (the warm-up call), not at the first ECG.
    with pytest.raises(ModelError, match="set \\[output\\] key"):
        ModelRuntime.load(write_card(tmp_path, model))


def test_normalisation_math():
    rng = np.random.default_rng(0)
    batch = rng.normal(300, 80, (2, 5000, 12)).astype(np.float32)
    z = normalize(batch, CardInput(normalization="per_lead_zscore"))
    np.testing.assert_allclose(z.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=1), 1, atol=1e-4)
    lead = batch[1, :, 4].astype(float)
    np.testing.assert_allclose(z[1, :, 4], (lead - lead.mean()) / (lead.std() + 1e-6), atol=1e-4)
    flat = normalize(np.full((1, 5000, 12), 7.0, np.float32), CardInput())
    assert np.all(np.isfinite(flat)) and np.all(flat == 0)
    scaled = normalize(batch, CardInput(normalization="scale", scale=0.5))
    np.testing.assert_allclose(scaled, batch * 0.5)


@pytest.mark.parametrize(
    ("output", "key", "expected"),
    [
        (np.array([[1.0], [2.0]]), None, [21.0, 23.0]),
        ({"age": np.array([[1.0], [2.0]])}, None, [21.0, 23.0]),
        ({"age": np.array([[1.0], [2.0]]), "sex": np.zeros((2, 2))}, "age", [21.0, 23.0]),
        ([np.zeros((2, 2)), np.array([[1.0], [2.0]])], 1, [21.0, 23.0]),
    ],
)
def test_output_transform(output, key, expected):
    years = years_from_output(output, CardOutput(key=key, scale=2.0, offset=19.0))
    np.testing.assert_allclose(years, expected)


@pytest.mark.parametrize(
    ("output", "key"),
    [
        ({"a": np.zeros((1, 1)), "b": np.zeros((1, 1))}, None),
        ({"a": np.zeros((1, 1))}, "b"),
        ([np.zeros((1, 1))], 3),
    ],
)
def test_output_key_errors(output, key):
    with pytest.raises(ModelError):
        years_from_output(output, CardOutput(key=key))


# -- drop-in readiness ---------------------------------------------------------------------

ML4H_OUTPUT = "[output]\nkey = 'output_instance_age_continuous'\n"
ML4H_TRANSFORM = "scale = 20.7367\noffset = 54.4974\n"


def test_a_model_built_the_way_ml4h_builds_loads_with_its_key_and_transform(tmp_path):
    model = ml4h_like_model(tmp_path / "tiny.keras")
    runtime = ModelRuntime.load(write_card(tmp_path, model, ML4H_OUTPUT + ML4H_TRANSFORM))
    ages = runtime.predict(np.ones((2, 5000, 12), np.float32))
    np.testing.assert_allclose(ages, [54.4974, 54.4974], atol=1e-4)  # z-score 0: the mean age
    np.testing.assert_allclose(runtime.predict_raw(np.ones((1, 5000, 12), np.float32)), [0.0])


def test_a_model_whose_input_differs_from_its_card_is_refused_with_a_clear_message(tmp_path):
    model = ml4h_like_model(tmp_path / "tiny.keras", samples=600)  # ml4h's median-beat maps
    with pytest.raises(ModelError) as caught:
        ModelRuntime.load(write_card(tmp_path, model, ML4H_OUTPUT))
    reason = caught.value.reason
    assert "'input_median_continuous' of shape (600, 12)" in reason
    assert "its card says (5000, 12)" in reason


def test_an_output_that_is_not_one_value_per_ecg_is_refused(tmp_path):
    model = tiny_model(tmp_path / "tiny.keras", outputs="dict")
    with pytest.raises(ModelError, match="gives \\(2,\\) values per ECG"):
        ModelRuntime.load(write_card(tmp_path, model, "[output]\nkey = 'sex'\n"))


CUSTOM_LAYER = """
import keras


@keras.saving.register_keras_serializable(package="site")
class Doubling(keras.layers.Layer):
    def call(self, inputs):
        return inputs * 2.0
"""


def test_a_card_imports_the_modules_that_register_custom_layers(tmp_path, monkeypatch):
    # The module lies beside the card: the card's folder is searched after the import path.
    (tmp_path / "site_layers_for_test.py").write_text(CUSTOM_LAYER)
    keras = configure_tensorflow()
    with monkeypatch.context() as patch:
        patch.syspath_prepend(str(tmp_path))
        layers = importlib.import_module("site_layers_for_test")
    inputs = keras.Input((5000, 12))
    pooled = keras.layers.GlobalAveragePooling1D()(layers.Doubling()(inputs))
    keras.Model(inputs, keras.layers.Dense(1)(pooled)).save(tmp_path / "tiny.keras")
    # Forget the layer, as a fresh service process would not know it.
    monkeypatch.delitem(sys.modules, "site_layers_for_test")
    keras.saving.get_custom_objects().pop("site>Doubling")
    with pytest.raises(ModelError, match="Keras cannot load"):
        ModelRuntime.load(write_card(tmp_path, tmp_path / "tiny.keras"))
    card = write_card(
        tmp_path, tmp_path / "tiny.keras", "custom_modules = ['site_layers_for_test']\n"
    )
    assert ModelRuntime.load(card).predict(np.ones((1, 5000, 12), np.float32)).shape == (1,)


@pytest.mark.parametrize(
    ("modules", "message"),
    [("['os; rm -rf /']", "is not a Python module name"), ("['no_such_module_x']", "cannot be")],
)
def test_bad_custom_modules_are_named(tmp_path, tiny, modules, message):
    shutil.copy(tiny, tmp_path / "tiny.keras")
    with pytest.raises(ModelError, match=message):
        ModelRuntime.load(write_card(tmp_path, tiny, f"custom_modules = {modules}\n"))


def test_device_gpu_without_one_is_refused_and_cpu_runs(tmp_path, tiny):
    shutil.copy(tiny, tmp_path / "tiny.keras")
    card = write_card(tmp_path, tiny)
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this TensorFlow sees a GPU")
    with pytest.raises(ModelError, match="device = 'gpu' but TensorFlow sees no GPU"):
        ModelRuntime.load(card, device="gpu")
    runtime = ModelRuntime.load(card, device="cpu")
    assert runtime.predict(np.ones((1, 5000, 12), np.float32)).shape == (1,)
