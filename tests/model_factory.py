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


ML4H_INPUT, ML4H_OUTPUT = "input_median_continuous", "output_instance_age_continuous"


def _ml4h_model(keras, samples: int, encode, decode, age_initializer: str = "glorot_uniform"):
    """ml4h's block model: a nested encoder, a nested decoder named after the output, the
    input and the dict output under ml4h's names."""
    encoder_input = keras.Input((samples, 12), name=ML4H_INPUT)
    encoder = keras.Model(encoder_input, encode(encoder_input), name="encode_median")
    decoder_input = keras.Input(encoder.output.shape[1:])
    age = keras.layers.Dense(1, kernel_initializer=age_initializer)(decode(decoder_input))
    decoder = keras.Model(decoder_input, age, name=ML4H_OUTPUT)
    inputs = keras.Input((samples, 12), name=ML4H_INPUT)
    return keras.Model(inputs, {ML4H_OUTPUT: decoder(encoder(inputs))})


def ml4h_like_model(path: Path, samples: int = 5000) -> Path:
    """A small stand-in built the way ml4h builds ECG2Age, whose z-scored age is always 0
    (zero weights at the end)."""
    keras = configure_tensorflow()
    model = _ml4h_model(
        keras,
        samples,
        lambda x: keras.layers.GlobalAveragePooling1D()(
            keras.layers.Conv1D(8, 15, strides=5, activation="swish")(x)
        ),
        lambda x: keras.layers.Dense(4, activation="relu")(x),
        age_initializer="zeros",
    )
    model.save(path)
    return path


def ecg2age_sized_model(path: Path, width: int = 384, blocks: int = 4, dense: int = 680) -> Path:
    """A stand-in of the real ECG2Age file's size (about 100 M parameters, random weights),
    built the way ml4h builds it: convolution blocks at 1/2 ... 1/16 of the 500 Hz rate, then
    a wide dense layer. About 400 MB on disk."""
    keras = configure_tensorflow()

    def encode(x):
        x = keras.layers.Conv1D(64, 15, strides=2, padding="same", activation="swish")(x)
        for channels in (128, width, 2 * width):
            x = keras.layers.Conv1D(channels, 9, strides=2, padding="same", activation="swish")(x)
            for _ in range(blocks - 1):
                x = keras.layers.Conv1D(channels, 9, padding="same", activation="swish")(x)
        return keras.layers.Flatten()(keras.layers.MaxPooling1D(2)(x))

    model = _ml4h_model(
        keras, 5000, encode, lambda x: keras.layers.Dense(dense, activation="swish")(x)
    )
    model.save(path)
    return path


def write_card(folder: Path, model_file: Path, extra: str = "", sha: str | None = None) -> Path:
    card = folder / "model.toml"
    head = CARD_HEAD.format(sha=sha or sha256_of(model_file), size=model_file.stat().st_size)
    card.write_text(head + extra)
    return card
