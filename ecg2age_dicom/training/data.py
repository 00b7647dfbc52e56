"""Loading the shared ECG arrays (numpy only) and the PTB-XL split rules.

Layout and rules: ``shared/data/README.md``. Signals are stored as int16 first differences;
``cumsum`` then the int16 cast restores them exactly (1 unit = 1 uV). Folds 9-10 are the test
set: only :func:`load_ptbxl` with ``folds=TEST_FOLDS`` reads them, and only evaluation and the
reference set that ships with the project (:func:`load_reference`, 200 of their records) call
it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecg2age_dicom.errors import ModelError
from ecg2age_dicom.waveform import ECG, LEADS

TRAIN_FOLDS = (1, 2, 3, 4)
VALIDATION_FOLDS = (5,)  # early stopping only
TEST_FOLDS = (9, 10)  # final reporting only
PTBXL_FS = 100
REFERENCE_SET = (
    Path(__file__).resolve().parents[2] / "model_zoo" / "reference" / "ptbxl-test-200.npz"
)


@dataclass(frozen=True)
class Records:
    """ECG records of one sampling rate: signals (n, time, 12) in uV, ages in years."""

    signals: np.ndarray
    ages: np.ndarray
    ids: np.ndarray
    fs: float
    lengths: np.ndarray | None = None  # valid samples per record when zero-padded


def _decode(archive: np.lib.npyio.NpzFile) -> np.ndarray:
    return np.cumsum(archive["signals_delta"], axis=1, dtype=np.int32).astype(np.int16)


def _open(path: Path) -> np.lib.npyio.NpzFile:
    if not path.is_file():
        raise ModelError(f"training data {path} not found: point --data at shared/data")
    return np.load(path)


def load_ptbxl(data_dir: Path, folds: tuple[int, ...], limit: int | None = None) -> Records:
    """PTB-XL 100 Hz records of the given folds (``limit``: first N per fold, for smoke runs)."""
    signals, ages, ids = [], [], []
    for fold in folds:
        with _open(Path(data_dir) / "ptbxl" / f"fold_{fold:02d}.npz") as archive:
            end = limit or len(archive["age"])
            signals.append(_decode(archive)[:end])
            ages.append(archive["age"][:end])
            ids.append(archive["ecg_id"][:end])
    return Records(np.concatenate(signals), np.concatenate(ages), np.concatenate(ids), PTBXL_FS)


def load_ptbxl500(data_dir: Path, folds: tuple[int, ...]) -> Records:
    """The native 500 Hz PTB-XL records whose packaged fold is in ``folds``."""
    with _open(Path(data_dir) / "external" / "ptbxl500.npz") as archive:
        keep = np.isin(archive["ptbxl_pack_fold"], folds)
        return Records(_decode(archive)[keep], archive["age"][keep], archive["ecg_id"][keep], 500.0)


def load_code15(data_dir: Path) -> Records:
    """The CODE-15% records at 400 Hz (zero-padded to 4096; ``lengths`` holds the valid part)."""
    with _open(Path(data_dir) / "external" / "code15.npz") as archive:
        return Records(
            _decode(archive),
            archive["age"],
            archive["exam_id"],
            float(archive["fs"][0]),
            archive["length"],
        )


def load_reference(path: Path = REFERENCE_SET) -> Records:
    """The shipped reference set (:mod:`ecg2age_dicom.training.reference`): 200 PTB-XL test
    records at 100 Hz with their ages."""
    with _open(path) as archive:
        return Records(_decode(archive), archive["age"], archive["ecg_id"], PTBXL_FS)


def as_ecg(signal: np.ndarray, fs: float) -> ECG:
    """A record (time, 12) in uV as the decoder gives a file that recorded all 12 leads."""
    samples = np.asarray(signal, dtype=np.float32)
    samples.flags.writeable = False
    return ECG(samples, fs, LEADS, (), "", ("uV",), "", "", "", "")


def zscore_per_lead(signals: np.ndarray) -> np.ndarray:
    """Each lead of each ECG minus its mean, divided by its std + 1e-6 (the ECG2Age rule)."""
    signals = np.asarray(signals, dtype=np.float32)
    mean = signals.mean(axis=-2, keepdims=True)
    std = signals.std(axis=-2, keepdims=True)
    return (signals - mean) / (std + 1e-6)
