"""Model cards, loading, normalisation, batched prediction and the service's micro-batcher.

A model is a folder under ``model_zoo/`` with a ``model.toml`` card (name, version, intended
use, file, sha256, input layout and normalisation, output transform, measured metrics). This
module reads the card, checks the file's sha256, loads the Keras 3 model with
``compile=False``, and turns batches of (5000, 12) microvolt ECGs into ages in years.
TensorFlow is imported only when a model is loaded, so decoding-only commands stay light.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ecg2age_dicom.config import ModelSettings, describe_problems, read_toml
from ecg2age_dicom.errors import ModelError
from ecg2age_dicom.waveform import ECG, LEADS, to_model_input

log = logging.getLogger(__name__)

ZSCORE_EPSILON = 1e-6


class _CardSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CardInput(_CardSection):
    """``[input]``: what the model takes."""

    sampling_rate_hz: int = 500
    samples: int = 5000
    leads: tuple[str, ...] = LEADS
    normalization: Literal["per_lead_zscore", "scale"] = "per_lead_zscore"
    scale: float = 1.0
    length_policy: str = "centre crop / centre zero-pad to the input length"

    def model_input(self, ecg: ECG) -> np.ndarray:
        """The (samples, 12) float32 input this card asks for, from a decoded ECG."""
        return to_model_input(ecg, self.sampling_rate_hz, self.samples / self.sampling_rate_hz)


class CardOutput(_CardSection):
    """``[output]``: how to read years from the model's output (years = raw x scale + offset)."""

    key: str | int | None = None
    scale: float = 1.0
    offset: float = 0.0
    units: Literal["a"] = "a"


class Metrics(_CardSection):
    """``[metrics.<test set>]``: accuracy on a named test set (omitted keys: not known)."""

    n: int | None = Field(None, ge=1)
    mae: float | None = None
    rmse: float | None = None
    r2: float | None = None
    pearson_r: float | None = None
    source: str = "measured by ecg2age-dicom model evaluate"


class ModelCard(_CardSection):
    """The ``model.toml`` card of one model."""

    name: str
    version: str
    intended_use: str
    validated_for_clinical_use: bool = False
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=1)
    source_url: str = ""
    input: CardInput = CardInput()
    output: CardOutput = CardOutput()
    metrics: dict[str, Metrics] = {}

    folder: Path = Path(".")

    @property
    def path(self) -> Path:
        """Where the model file is expected."""
        return self.folder / self.file

    @property
    def clinical_use_warning(self) -> str | None:
        """The text SRs and logs carry when the model is not validated for clinical use."""
        if self.validated_for_clinical_use:
            return None
        return f"{self.name} {self.version} is not validated for clinical use."


def load_card(path: Path) -> ModelCard:
    """Read and validate a ``model.toml`` card.

    Raises
    ------
    ModelError
        The card is missing, not TOML, or has an unknown key or a bad value (named).
    """
    data = read_toml(Path(path), "model card", ModelError)
    try:
        return ModelCard(**data, folder=Path(path).parent)
    except ValidationError as exc:
        problems = "; ".join(describe_problems(exc))
        raise ModelError(f"model card {path} is invalid: {problems}") from None


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_file(card: ModelCard) -> None:
    """Refuse a missing model file or one whose sha256 differs from the card's."""
    if not card.path.is_file():
        raise ModelError(
            f"model file {card.path} for {card.name} {card.version} is missing; "
            "`ecg2age-dicom model fetch` downloads it"
        )
    actual = sha256_of(card.path)
    if actual != card.sha256:
        raise ModelError(
            f"model file {card.path} has sha256 {actual} but its card says {card.sha256}: "
            "refusing to load a file that is not the one the card describes"
        )


def normalize(batch: np.ndarray, card_input: CardInput) -> np.ndarray:
    """Apply the card's input normalisation to a (B, samples, leads) microvolt batch."""
    batch = np.asarray(batch, dtype=np.float32)
    if card_input.normalization == "scale":
        return batch * np.float32(card_input.scale)
    mean = batch.mean(axis=1, keepdims=True)
    std = batch.std(axis=1, keepdims=True)
    return (batch - mean) / (std + np.float32(ZSCORE_EPSILON))


def years_from_output(output: Any, card_output: CardOutput) -> np.ndarray:
    """Pick the card's output (by name or index) and apply scale/offset: ages in years (B,)."""
    if isinstance(output, dict):
        if card_output.key is None:
            if len(output) != 1:
                raise ModelError(
                    f"the model has outputs {sorted(output)}: set [output] key in the card"
                )
            output = next(iter(output.values()))
        elif card_output.key not in output:
            raise ModelError(f"[output] key {card_output.key!r} is not one of {sorted(output)}")
        else:
            output = output[card_output.key]
    elif isinstance(output, list | tuple):
        key = 0 if card_output.key is None else card_output.key
        if not isinstance(key, int) or not -len(output) <= key < len(output):
            raise ModelError(f"[output] key {key!r} does not index the {len(output)} outputs")
        output = output[key]
    values = np.asarray(output, dtype=np.float64)
    values = values.reshape(values.shape[0], -1)[:, 0]
    return values * card_output.scale + card_output.offset


def configure_tensorflow(intra_op_threads: int = 0, inter_op_threads: int = 0) -> Any:
    """Import Keras on TensorFlow quietly, with the given thread counts (0: TF's default)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no C++ start-up noise
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    try:
        if intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        if inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    except RuntimeError:
        log.debug("tensorflow already initialised; thread counts unchanged")
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
    ) -> ModelRuntime:
        """Load the card's model, check it, and make one warm-up call.

        Raises
        ------
        ModelError
            Card invalid, file missing, sha256 mismatch (unless ``verify_sha256`` is False), or
            the file cannot be loaded by Keras.
        """
        card = load_card(card_path)
        if verify_sha256:
            check_file(card)
        elif not card.path.is_file():
            raise ModelError(f"model file {card.path} is missing")
        else:
            log.warning("model sha256 check disabled (development setting) model=%s", card.name)
        keras = configure_tensorflow(intra_op_threads, inter_op_threads)
        try:
            keras_model = keras.saving.load_model(card.path, compile=False)
        except Exception as exc:  # Keras raises many types for unreadable files
            raise ModelError(f"Keras cannot load {card.path}: {exc}") from None
        runtime = cls(card, keras_model)
        runtime.predict(np.zeros((1, card.input.samples, len(card.input.leads)), np.float32))
        if card.clinical_use_warning:
            log.warning(
                "model=%s version=%s %s", card.name, card.version, card.clinical_use_warning
            )
        log.info("model loaded name=%s version=%s file=%s", card.name, card.version, card.path)
        return runtime

    @classmethod
    def from_settings(cls, settings: ModelSettings, card: Path | None = None) -> ModelRuntime:
        """Load ``card`` (default: ``[model] card``) with the ``[model]`` settings."""
        return cls.load(
            card or settings.card,
            verify_sha256=settings.verify_sha256,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Ages in years (B,) for a (B, samples, 12) float32 batch in microvolts."""
        expected = (self.card.input.samples, len(self.card.input.leads))
        if batch.ndim != 3 or batch.shape[1:] != expected:
            raise ModelError(f"batch shape {batch.shape} does not match (B, {expected[0]}, 12)")
        output = self.keras_model.predict_on_batch(normalize(batch, self.card.input))
        return years_from_output(output, self.card.output)


class MicroBatcher:
    """Collects single ECGs from many threads into batches for one model.

    ``submit`` returns a Future for one ECG's age; a worker thread flushes when ``batch_size``
    ECGs are waiting or ``max_wait_ms`` after the first one arrived, whichever comes first.
    """

    def __init__(
        self, predict: Callable[[np.ndarray], np.ndarray], batch_size: int, max_wait_ms: float
    ) -> None:
        self._predict = predict
        self._batch_size = batch_size
        self._max_wait_s = max_wait_ms / 1000.0
        self._queue: queue.Queue[tuple[np.ndarray, Future[float]] | None] = queue.Queue()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._worker.start()

    def submit(self, model_input: np.ndarray) -> Future[float]:
        """Queue one (samples, 12) ECG; the Future resolves to its age in years."""
        if self._closed:
            raise ModelError("the micro-batcher is closed")
        future: Future[float] = Future()
        self._queue.put((model_input, future))
        return future

    def close(self) -> None:
        """Finish what was submitted, then stop the worker."""
        self._closed = True
        self._queue.put(None)
        self._worker.join()

    def _collect(self, first: tuple[np.ndarray, Future[float]]) -> tuple[list, bool]:
        items, deadline = [first], time.monotonic() + self._max_wait_s
        while len(items) < self._batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=max(remaining, 0))
                    if remaining > 0
                    else (self._queue.get_nowait())
                )
            except queue.Empty:
                break
            if item is None:
                return items, True
            items.append(item)
        return items, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            items, stop = self._collect(first)
            futures = [future for _, future in items]
            try:
                ages = self._predict(np.stack([model_input for model_input, _ in items]))
            except Exception as exc:  # every waiting caller must hear about it
                for future in futures:
                    future.set_exception(exc)
                continue
            for future, age in zip(futures, ages, strict=True):
                future.set_result(float(age))
