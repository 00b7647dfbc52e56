"""DICOM files on disk: reading them, and writing them atomically (the spool's rule)."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError

from ecg2age_dicom.errors import InvalidECG


def expand_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """Each path given, with directories replaced by every file below them, sorted."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def read_dataset(path: Path) -> FileDataset:
    """Read a DICOM file (Part 10, or a bare dataset without preamble).

    Raises
    ------
    InvalidECG
        The file is missing, unreadable or not DICOM.
    """
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass  # no 128-byte preamble: some writers omit it; retry leniently below
    except OSError as exc:
        raise InvalidECG(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        dataset = pydicom.dcmread(path, force=True)
        if len(dataset) == 0 or "SOPClassUID" not in dataset:
            raise InvalidECG(f"{path} is not a DICOM file")
        return dataset
    except InvalidECG:
        raise
    except Exception as exc:  # pydicom raises many types on garbage; all mean "not DICOM"
        raise InvalidECG(f"{path} is not a readable DICOM file: {exc}") from None


def read_dataset_bytes(encoded: bytes) -> FileDataset:
    """Parse a Part 10 file held in memory (as received over the network).

    Raises
    ------
    InvalidECG
        The bytes are not a DICOM file.
    """
    try:
        return pydicom.dcmread(io.BytesIO(encoded), force=True)
    except Exception as exc:  # pydicom raises many types on garbage
        raise InvalidECG(f"the received data is not a readable DICOM dataset: {exc}") from None


def write_atomically(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)
    return path


def dataset_bytes(dataset: Dataset) -> bytes:
    """A dataset as a DICOM Part 10 file, in memory."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
