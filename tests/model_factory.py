"""A tiny Keras model with the ECG2Age contract, and a card for it, for fast tests."""

from __future__ import annotations

from pathlib import Path

from ecg2age_dicom.model import configure_tensorflow, sha256_of

CARD_HEAD = """\
name = "Tiny"
version = "0.1"
intended_use = "tests only"
file = "tiny.keras"
sha256 = "{sha}"
size_bytes = {size}
"""


def tiny_model(path: Path, outputs: str = "single") -> Path:
    """A small Keras model with the ECG2Age input contract (mean of lead I, scaled)."""
    keras = configure_tensorflow()
    inputs = keras.Input((5000, 12))
    pooled = keras.layers.GlobalAveragePooling1D()(inputs)
    first = keras.layers.Dense(1, name="age", kernel_initializer="ones")(pooled)
    if outputs == "single":
        model = keras.Model(inputs, first)
    else:
        second = keras.layers.Dense(2, name="sex", kernel_initializer="zeros")(pooled)
        model = keras.Model(inputs, {"age": first, "sex": second})
    model.save(path)
    return path


def write_card(folder: Path, model_file: Path, extra: str = "", sha: str | None = None) -> Path:
    card = folder / "model.toml"
    head = CARD_HEAD.format(sha=sha or sha256_of(model_file), size=model_file.stat().st_size)
    card.write_text(head + extra)
    return card
