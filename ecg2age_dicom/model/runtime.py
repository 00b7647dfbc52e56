"""A loaded model: normalisation, batched prediction and the output transform to years.

:meth:`ModelRuntime.load` checks the card's file (sha256), loads the Keras 3 model with
``compile=False`` and turns batches of (5000, 12) microvolt ECGs into ages in years.
TensorFlow is imported only when a model is loaded, so decoding-only commands stay light.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecg2age_dicom.config import ModelSettings
from ecg2age_dicom.errors import ModelError
from ecg2age_dicom.model.card import CardInput, CardOutput, ModelCard, check_file, load_card

log = logging.getLogger(__name__)

ZSCORE_EPSILON = 1e-6


def normalize(batch: np.ndarray, card_input: CardInput) -> np.ndarray:
    """Apply the card's input normalisation to a (B, samples, leads) microvolt batch."""
    batch = np.asarray(batch, dtype=np.float32)
    if card_input.normalization == "scale":
        return batch * np.float32(card_input.scale)
    # Sums over time as products with ones: three times faster than .mean and .std over
    # the middle axis (a third of the default model's time per batch), the same z-scores
    # to float32 rounding.
    samples = batch.shape[1]
    ones = np.ones(samples, np.float32)
    centred = batch - (ones @ batch / samples)[:, np.newaxis, :]
    spread = np.sqrt(ones @ (centred * centred) / samples)
    centred /= (spread + np.float32(ZSCORE_EPSILON))[:, np.newaxis, :]
    return centred


def select_output(output: Any, card_output: CardOutput) -> Any:
    """The card's output (``[output] key``: a name or an index) of a model's output structure:
    a dict (named outputs), a list / tuple, or one tensor or array.

    Raises
    ------
    ModelError
        The key names no output, or the model has several outputs and the card names none.
    """
    if isinstance(output, dict):
        if card_output.key is None:
            if len(output) != 1:
                raise ModelError(
                    f"the model has outputs {sorted(output)}: set [output] key in the card"
                )
            return next(iter(output.values()))
        if card_output.key not in output:
            raise ModelError(f"[output] key {card_output.key!r} is not one of {sorted(output)}")
        return output[card_output.key]
    if isinstance(output, list | tuple):
        key = 0 if card_output.key is None else card_output.key
        if not isinstance(key, int) or not -len(output) <= key < len(output):
            raise ModelError(f"[output] key {key!r} does not index the {len(output)} outputs")
        return output[key]
    return output


def raw_from_output(output: Any, card_output: CardOutput) -> np.ndarray:
    """The card's output (by name or index), one value per ECG (B,), before scale/offset."""
    values = np.asarray(select_output(output, card_output), dtype=np.float64)
    return values.reshape(values.shape[0], -1)[:, 0]


def years_from_output(output: Any, card_output: CardOutput) -> np.ndarray:
    """Pick the card's output (by name or index) and apply scale/offset: ages in years (B,)."""
    return raw_from_output(output, card_output) * card_output.scale + card_output.offset


def check_signature(keras_model: Any, card: ModelCard) -> None:
    """Refuse a model whose input or output does not fit its card, before any call.

    A functional or sequential model states its signature: one input of (samples, leads),
    the card's output one value per ECG. A model that states none (subclassed) is checked by
    the warm-up call alone.

    Raises
    ------
    ModelError
        What differs, and which card keys say otherwise.
    """
    inputs = getattr(keras_model, "inputs", None)
    if not inputs:
        return
    names = [str(getattr(tensor, "name", "?")) for tensor in inputs]
    if len(inputs) != 1:
        raise ModelError(
            f"{card.path} takes {len(inputs)} inputs {names}; the service gives one ECG "
            f"({card.input.samples}, {len(card.input.leads)})"
        )
    shape = tuple(inputs[0].shape[1:])
    expected = (card.input.samples, len(card.input.leads))
    if shape != expected:
        raise ModelError(
            f"{card.path} takes input {names[0]!r} of shape {shape} per ECG, but its card says "
            f"{expected} ([input] samples = {card.input.samples}, {len(card.input.leads)} "
            "leads): not the model this card describes, or a card to correct"
        )
    chosen = select_output(keras_model.output, card.output)
    per_ecg = tuple(chosen.shape[1:])
    if int(np.prod([1 if size is None else size for size in per_ecg])) != 1 or None in per_ecg:
        raise ModelError(
            f"{card.path} gives {per_ecg} values per ECG at [output] key "
            f"{card.output.key!r}, not one age: set [output] key to the age output"
        )


def keras_model_on_gpu() -> bool:
    """Whether TensorFlow places work on a GPU in this process (after configuration)."""
    import tensorflow as tf

    return bool(tf.config.get_visible_devices("GPU"))


def import_custom_modules(card: ModelCard) -> None:
    """Import the card's ``custom_modules`` (on the import path, then in the card's folder).

    Raises
    ------
    ModelError
        A module cannot be imported (its error named).
    """
    if not card.custom_modules:
        return
    folder = str(card.folder.resolve())
    if folder not in sys.path:
        sys.path.append(folder)
    for name in card.custom_modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # whatever the module's own import raises
            raise ModelError(
                f"card of {card.name} {card.version}: custom module {name!r} cannot be "
                f"imported: {type(exc).__name__}: {exc}"
            ) from None


def configure_tensorflow(
    intra_op_threads: int = 0, inter_op_threads: int = 0, device: str = "auto"
) -> Any:
    """Import Keras on TensorFlow quietly, with the given thread counts (0: TF's default) on
    ``device`` (``[model] device``).

    Raises
    ------
    ModelError
        ``device`` is "gpu" and TensorFlow sees none.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no C++ start-up noise
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise ModelError(
            "[model] device = 'gpu' but TensorFlow sees no GPU (this TensorFlow build or "
            "driver has none): install TensorFlow's CUDA build, or set device = 'auto'"
        )
    try:
        if device == "cpu" and gpus:
            tf.config.set_visible_devices([], "GPU")
        if intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        if inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:
        log.debug("tensorflow already initialised; devices and thread counts unchanged")
    import keras

    return keras


@dataclass
class ModelRuntime:
    """A loaded model with its card: ``predict`` takes microvolts, returns years."""

    card: ModelCard
    keras_model: Any

    @classmethod
    def load(
        cls,
        card_path: Path,
        *,
        verify_sha256: bool = True,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        device: str = "auto",
    ) -> ModelRuntime:
        """Load the card's model, check it, and make two warm-up calls.

        Raises
        ------
        ModelError
            Card invalid, file missing, sha256 mismatch (unless ``verify_sha256`` is False),
            the file cannot be loaded by Keras or does not fit its card, or ``device`` is
            "gpu" and there is none.
        """
        card = load_card(card_path)
        if verify_sha256:
            check_file(card)
        elif not card.path.is_file():
            raise ModelError(f"model file {card.path} is missing")
        else:
            log.warning("model sha256 check disabled (development setting) model=%s", card.name)
        keras = configure_tensorflow(intra_op_threads, inter_op_threads, device)
        import_custom_modules(card)
        try:
            keras_model = keras.saving.load_model(card.path, compile=False)
        except Exception as exc:  # Keras raises many types for unreadable files
            raise ModelError(f"Keras cannot load {card.path}: {exc}") from None
        check_signature(keras_model, card)
        runtime = cls(card, keras_model)
        try:
            # Keras traces its function again for the second batch size it sees, then keeps
            # one for every size: two warm-up calls spare the first real batch that (0.45 s
            # for the default model).
            for size in (1, 2):
                shape = (size, card.input.samples, len(card.input.leads))
                runtime.predict(np.zeros(shape, np.float32))
        except ModelError:
            raise
        except Exception as exc:  # a subclassed model that does not take the card's input
            raise ModelError(
                f"{card.path} fails on all-zero ECGs of the card's shape "
                f"({card.input.samples}, {len(card.input.leads)}): {type(exc).__name__}: {exc}"
            ) from None
        if card.clinical_use_warning:
            log.warning(
                "model=%s version=%s %s", card.name, card.version, card.clinical_use_warning
            )
        log.info(
            "model loaded name=%s version=%s file=%s device=%s",
            card.name,
            card.version,
            card.path,
            "GPU" if keras_model_on_gpu() else "CPU",
        )
        return runtime

    @classmethod
    def from_settings(cls, settings: ModelSettings, card: Path | None = None) -> ModelRuntime:
        """Load ``card`` (default: ``[model] card``) with the ``[model]`` settings."""
        return cls.load(
            card or settings.card,
            verify_sha256=settings.verify_sha256,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
            device=settings.device,
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Ages in years (B,) for a (B, samples, 12) float32 batch in microvolts."""
        return years_from_output(self._output(batch), self.card.output)

    def predict_raw(self, batch: np.ndarray) -> np.ndarray:
        """The model's own value (B,) before the card's scale and offset (``model verify``)."""
        return raw_from_output(self._output(batch), self.card.output)

    def _output(self, batch: np.ndarray) -> Any:
        expected = (self.card.input.samples, len(self.card.input.leads))
        if batch.ndim != 3 or batch.shape[1:] != expected:
            raise ModelError(f"batch shape {batch.shape} does not match (B, {expected[0]}, 12)")
        return self.keras_model.predict_on_batch(normalize(batch, self.card.input))
