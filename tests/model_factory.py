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


def ml4h_like_model(path: Path, samples: int = 5000) -> Path:
    """A stand-in built the way ml4h builds ECG2Age: input ``input_median_continuous``, a
    nested encoder model and a nested decoder model named ``output_instance_age_continuous``,
    a dict output under that name, and a z-scored age (here always 0: zero weights)."""
    keras = configure_tensorflow()
    name = "input_median_continuous"
    encoder_input = keras.Input((samples, 12), name=name)
    features = keras.layers.Conv1D(8, 15, strides=5, activation="swish")(encoder_input)
    features = keras.layers.GlobalAveragePooling1D()(features)
    encoder = keras.Model(encoder_input, features, name="encode_median")
    decoder_input = keras.Input((8,))
    hidden = keras.layers.Dense(4, activation="relu")(decoder_input)
    age = keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros")(hidden)
    decoder = keras.Model(decoder_input, age, name="output_instance_age_continuous")
    inputs = keras.Input((samples, 12), name=name)
    outputs = {"output_instance_age_continuous": decoder(encoder(inputs))}
    keras.Model(inputs, outputs).save(path)
    return path


def write_card(folder: Path, model_file: Path, extra: str = "", sha: str | None = None) -> Path:
    card = folder / "model.toml"
    head = CARD_HEAD.format(sha=sha or sha256_of(model_file), size=model_file.stat().st_size)
    card.write_text(head + extra)
    return card
