"""Atomic writes: all or nothing, and no temporary file left on any failure."""

from __future__ import annotations

import errno
import os

import pytest

from ecg2age_dicom import dicomfile
from ecg2age_dicom.dicomfile import move_durably, write_atomically


def test_a_write_replaces_the_file_whole(tmp_path):
    path = write_atomically(tmp_path / "a" / "x.dcm", b"first")
    write_atomically(path, b"second")
    assert path.read_bytes() == b"second" and os.listdir(path.parent) == ["x.dcm"]


def test_a_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    write_atomically(tmp_path / "x.dcm", b"kept")

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dicomfile.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        write_atomically(tmp_path / "x.dcm", b"lost")
    assert os.listdir(tmp_path) == ["x.dcm"] and (tmp_path / "x.dcm").read_bytes() == b"kept"


def test_a_move_keeps_the_bytes(tmp_path):
    source = tmp_path / "in" / "tmp1.dcm"
    source.parent.mkdir()
    source.write_bytes(b"ecg")
    target = move_durably(source, tmp_path / "received" / "1.2.dcm")
    assert target.read_bytes() == b"ecg" and not source.exists()


def test_a_deferred_write_leaves_the_folder_sync_to_the_caller(tmp_path, monkeypatch):
    synced: list[object] = []
    monkeypatch.setattr(dicomfile, "sync_folder", synced.append)
    write_atomically(tmp_path / "a.dcm", b"a", defer_folder_sync=True)
    assert synced == [] and (tmp_path / "a.dcm").read_bytes() == b"a"
    write_atomically(tmp_path / "b.dcm", b"b")
    assert synced == [tmp_path]
