"""The training and evaluation code, run for real on a tiny synthetic copy of the data layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tomllib

from ecg2age_dicom.model import Metrics, ModelRuntime, load_card
from ecg2age_dicom.training import data
from ecg2age_dicom.training.evaluate import evaluate, metrics, write_metrics
from ecg2age_dicom.training.train import train, write_card
from ecg2age_dicom.waveform import LEADS


def _records(n: int, samples: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(samples) / fs
    rate = rng.uniform(0.8, 1.6, (n, 1, 1))
    signal = 600 * np.sin(2 * np.pi * rate * t[None, :, None] + rng.uniform(0, 6, (n, 1, 12)))
    signal += rng.normal(0, 20, signal.shape)
    return signal.astype(np.int16)


def _delta(signals: np.ndarray) -> np.ndarray:
    return np.diff(signals, axis=1, prepend=np.zeros_like(signals[:, :1])).astype(np.int16)


def make_data_dir(root: Path, per_fold: int = 10) -> Path:
    """The shared/data layout (README) with a few synthetic records per file."""
    rng = np.random.default_rng(1)
    (root / "ptbxl").mkdir(parents=True)
    (root / "external").mkdir()
    next_id = 1
    for fold in (*data.TRAIN_FOLDS, *data.VALIDATION_FOLDS, *data.TEST_FOLDS):
        ids = np.arange(next_id, next_id + per_fold, dtype=np.int32)
        next_id += per_fold
        np.savez(
            root / "ptbxl" / f"fold_{fold:02d}.npz",
            signals_delta=_delta(_records(per_fold, 1000, 100, rng)),
            ecg_id=ids,
            patient_id=ids,
            age=rng.uniform(20, 85, per_fold).astype(np.float32),
            sex=np.zeros(per_fold, np.int8),
        )
    test_ids = np.load(root / "ptbxl" / "fold_09.npz")["ecg_id"][:4]
    np.savez(
        root / "external" / "ptbxl500.npz",
        signals_delta=_delta(_records(4, 5000, 500, rng)),
        ecg_id=test_ids,
        patient_id=test_ids,
        age=rng.uniform(20, 85, 4).astype(np.float32),
        sex=np.zeros(4, np.int8),
        strat_fold_official=np.full(4, 9, np.int8),
        ptbxl_pack_fold=np.full(4, 9, np.int8),
        fs=np.int32(500),
    )
    lengths = np.array([4096, 2934, 1205, 4096, 2934, 4096], np.int32)
    signals = _records(6, 4096, 400, rng)
    for i, length in enumerate(lengths):
        signals[i, length:] = 0
    np.savez(
        root / "external" / "code15.npz",
        signals_delta=_delta(signals),
        length=lengths,
        fs=np.full(6, 400, np.int32),
        uv_per_adu=np.ones(6, np.float32),
        exam_id=np.arange(6, dtype=np.int64),
        patient_id=np.arange(6, dtype=np.int64),
        age=rng.uniform(20, 85, 6).astype(np.float32),
        sex=np.zeros(6, np.int8),
        chagas=np.zeros(6, np.int8),
    )
    return root


def test_data_loading_restores_signals_and_keeps_test_folds_apart(tmp_path):
    root = make_data_dir(tmp_path / "data")
    train_records = data.load_ptbxl(root, data.TRAIN_FOLDS)
    assert train_records.signals.shape == (40, 1000, len(LEADS))
    assert train_records.signals.dtype == np.int16 and train_records.fs == 100
    raw = np.load(root / "ptbxl" / "fold_01.npz")
    restored = np.cumsum(raw["signals_delta"], axis=1, dtype=np.int32).astype(np.int16)
    np.testing.assert_array_equal(train_records.signals[:10], restored)
    test_ids = data.load_ptbxl(root, data.TEST_FOLDS).ids
    assert not set(test_ids) & set(train_records.ids)
    with pytest.raises(Exception, match="point --data"):
        data.load_ptbxl(tmp_path / "nowhere", (1,))


def test_tiny_training_run_exports_a_servable_model(tmp_path):
    root = make_data_dir(tmp_path / "data")
    out = tmp_path / "model"
    result = train(root, out, epochs=1, batch_size=16, verbose=0)
    assert result.model_path.is_file() and result.epochs_run == 1 and result.n_train == 40
    card_path = write_card(out, result, "0.0.1-test")
    card = load_card(card_path)
    assert card.output.scale == pytest.approx(result.age_std, abs=1e-3)
    assert card.output.offset == pytest.approx(result.age_mean, abs=1e-3)

    runtime = ModelRuntime.load(card_path)  # sha256 checked against the card just written
    ages = runtime.predict(np.random.default_rng(0).normal(0, 300, (2, 5000, 12)))
    assert ages.shape == (2,) and np.all(np.isfinite(ages))

    evaluation = evaluate(runtime, root, plots_dir=out)
    assert evaluation.results["ptbxl_test"].n == 20
    assert evaluation.results["code15"].n == 5  # the 1205-sample (3 s) record is left out
    assert evaluation.sampling_rate_agreement["n"] == 4
    assert (out / "calibration.png").stat().st_size > 0
    assert (out / "error_by_age.png").stat().st_size > 0
    write_metrics(card_path, evaluation.results)
    reread = load_card(card_path)
    assert reread.metrics["ptbxl_test"] == evaluation.results["ptbxl_test"]
    assert reread.sha256 == card.sha256  # metrics never change the model's identity


def test_metrics_math():
    true = np.array([20.0, 40.0, 60.0, 80.0])
    predicted = np.array([30.0, 40.0, 50.0, 90.0])
    m = metrics(true, predicted)
    assert (m.n, m.mae, m.rmse) == (4, 7.5, pytest.approx(8.660, abs=1e-3))
    assert m.r2 == pytest.approx(1 - 300 / 2000, abs=1e-4)
    assert m.pearson_r == pytest.approx(np.corrcoef(true, predicted)[0, 1], abs=1e-4)


def test_write_metrics_replaces_only_the_metrics_tables(tmp_path):
    card = tmp_path / "model.toml"
    card.write_text('name = "x"\n[output]\nscale = 2.0\n\n[metrics.old]\nn = 3\nmae = 1.0\n')
    write_metrics(card, {"new": Metrics(n=5, mae=2.0, rmse=3.0, r2=0.1, pearson_r=0.5)})
    parsed = tomllib.loads(card.read_text())
    assert parsed["output"] == {"scale": 2.0}
    assert set(parsed["metrics"]) == {"new"} and parsed["metrics"]["new"]["n"] == 5
