"""The default model's network: a small 1D ResNet at 100 Hz behind a fixed 500 -> 100 Hz front-end.

The exported model takes the ECG2Age contract, (B, 5000, 12) z-scored leads at 500 Hz, so the
service treats it like the real ECG2Age. Inside, a frozen depthwise FIR filter (the same
anti-aliasing filter :func:`ecg2age_dicom.waveform.resample` uses for a 5:1 decimation)
brings the signal to 100 Hz, the rate of the PTB-XL training records.
"""

from __future__ import annotations

from typing import Any

from ecg2age_dicom.model import configure_tensorflow
from ecg2age_dicom.waveform import LEADS, antialias_filter

SERVING_FS = 500
TRAINING_FS = 100
DECIMATION = SERVING_FS // TRAINING_FS
SERVING_SAMPLES = 5000
TRAINING_SAMPLES = SERVING_SAMPLES // DECIMATION


def _residual_block(
    layers: Any, x: Any, filters: int, stride: int, kernel_size: int, dropout: float
) -> Any:
    shortcut = x
    y = layers.Conv1D(filters, kernel_size, strides=stride, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.Activation("relu")(y)
    y = layers.Dropout(dropout)(y)
    y = layers.Conv1D(filters, kernel_size, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        if stride != 1:
            shortcut = layers.AveragePooling1D(stride, padding="same")(shortcut)
        shortcut = layers.Conv1D(filters, 1, use_bias=False)(shortcut)
        shortcut = layers.BatchNormalization()(shortcut)
    return layers.Activation("relu")(layers.Add()([y, shortcut]))


def build_core(
    widths: tuple[int, ...] = (32, 48, 64, 96), kernel_size: int = 7, dropout: float = 0.2
) -> Any:
    """The trainable network: (B, 1000, 12) z-scored leads at 100 Hz -> standardised age (B, 1)."""
    keras = configure_tensorflow()
    layers = keras.layers
    inputs = keras.Input((TRAINING_SAMPLES, len(LEADS)), name="ecg_100hz")
    x = layers.Conv1D(widths[0], 15, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    for width in widths:
        x = _residual_block(layers, x, width, 2, kernel_size, dropout)
        x = _residual_block(layers, x, width, 1, kernel_size, dropout)
    x = layers.Concatenate()([layers.GlobalAveragePooling1D()(x), layers.GlobalMaxPooling1D()(x)])
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(1, name="age_standardised")(x)
    return keras.Model(inputs, outputs, name="ecg2age_ptbxl_core")


def build_serving_model(core: Any) -> Any:
    """Wrap ``core`` behind the frozen decimation front-end: (B, 5000, 12) at 500 Hz in."""
    keras = configure_tensorflow()
    layers = keras.layers
    inputs = keras.Input((SERVING_SAMPLES, len(LEADS)), name="ecg_500hz")
    taps = antialias_filter(1, DECIMATION)
    decimate = layers.DepthwiseConv1D(
        len(taps),
        strides=DECIMATION,
        padding="same",
        use_bias=False,
        trainable=False,
        name="decimate_500_to_100hz",
    )
    x = decimate(inputs)
    kernel = keras.ops.convert_to_numpy(decimate.kernel).copy()
    kernel[:, :, 0] = taps[:, None]
    decimate.set_weights([kernel])
    outputs = core(x)
    return keras.Model(inputs, outputs, name="ecg2age_ptbxl")
