"""DICOM files on disk: reading them, and writing them atomically (the spool's rule)."""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag

from ecg2age_dicom.errors import InvalidECG

PART10_PREFIX = b"\x00" * 128 + b"DICM"
"""The 128-byte preamble and the "DICM" prefix that open a Part 10 file."""
FILE_META_ELEMENTS_START = len(PART10_PREFIX) + 12
"""Where the File Meta elements after (0002,0000) begin: what its group length counts."""


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


def write_atomically(path: Path, data: bytes, *, defer_folder_sync: bool = False) -> Path:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename: all or nothing.
    Then fsync the folder, so that the rename survives a power cut; with
    ``defer_folder_sync`` the caller does that once for all its files
    (:func:`sync_folder`) before it relies on them.

    On any failure (a full disk...) the temporary file is removed and the error raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if not defer_folder_sync:
        sync_folder(path.parent)
    return path


def move_durably(source: Path, target: Path) -> Path:
    """Move a file within one file system so that it survives a power cut: fsync its data,
    rename it, fsync the folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(source, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(source, target)
    sync_folder(target.parent)
    return target


def sync_folder(folder: Path) -> None:
    """fsync ``folder``: the renames and new names in it survive a power cut."""
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def encoded_copy(dataset: Dataset, leave_out: Collection[int] = ()) -> Dataset:
    """A new dataset holding the same elements (but the tags in ``leave_out``), still encoded:
    an element is decoded (and changed) in the copy only, and the ones never touched are
    written out as they are."""
    elements: dict[BaseTag, DataElement | RawDataElement] = {
        tag: dataset.get_item(tag)
        for tag in dataset.keys()  # noqa: SIM118 - iterating a Dataset converts each element
        if tag not in leave_out
    }
    # The same character set as read and as in force: pydicom then writes encoded elements
    # as they are, instead of decoding them all to re-encode.
    charset = dataset.original_character_set
    copy = Dataset(elements, parent_encoding=charset)
    implicit_vr, little_endian = dataset.original_encoding
    copy.set_original_encoding(implicit_vr, little_endian, charset)
    return copy
