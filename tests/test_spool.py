"""Spool file names: from valid UIDs only, never outside their folder; tidy-up at start."""

from __future__ import annotations

import os
import time

import pytest

from ecg2age_dicom import spool as spool_module
from ecg2age_dicom.spool import Spool


@pytest.mark.parametrize(
    "uid", ["../../../tmp/x", "/tmp/x", "x/../1.2.3", "1.2/3.4", "..", ".", "", "1.2\n"]
)
def test_a_name_that_is_not_a_valid_uid_is_refused(tmp_path, uid):
    spool = Spool(tmp_path / "spool")
    for place in (spool.received_path, spool.quarantine_path, spool.report_path):
        with pytest.raises(ValueError, match="invalid UID"):
            place(uid)


def test_the_second_line_of_defence_refuses_a_path_that_leaves_its_folder(tmp_path, monkeypatch):
    """Even if the UID rule let a name through, the path must stay a child of its folder."""
    spool = Spool(tmp_path / "spool")
    monkeypatch.setattr(spool_module, "is_valid_uid", lambda uid: True)
    for uid in ("../1.2.3", "1.2/../../x", "/tmp/x", "a/b"):
        with pytest.raises(ValueError, match="not inside"):
            spool.received_path(uid)
    assert spool.received_path("1.2.4") == spool.received / "1.2.4.dcm"


def test_tidy_removes_unacknowledged_and_interrupted_files_only(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.incoming.mkdir(parents=True)
    spool.reports.mkdir(parents=True)
    (spool.incoming / "tmpabc.dcm").write_bytes(b"half")
    old, new = spool.reports / ".1.2.dcm.1.2.tmp", spool.reports / ".1.3.dcm.1.2.tmp"
    kept = spool.reports / "1.4.dcm"
    for path in (old, new, kept):
        path.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    spool.tidy()
    assert list(spool.incoming.iterdir()) == []
    assert sorted(p.name for p in spool.reports.iterdir()) == sorted([new.name, kept.name])
