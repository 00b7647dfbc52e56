"""``ecg2age-dicom inspect``: what a new user sees on good and bad files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from tests.cli_runner import run
from tests.ecg_factory import make_ecg

SAMPLE = Path(get_testdata_file("waveform_ecg.dcm"))
JSON_KEYS = {
    "path",
    "sop_instance_uid",
    "sampling_frequency",
    "duration_s",
    "leads_found",
    "leads_derived",
    "ok",
    "error",
}


@pytest.fixture
def mixed_dir(tmp_path):
    folder = tmp_path / "ecgs"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(SAMPLE, folder / "mortara.dcm")
    make_ecg(leads=("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"), fs=250).write(
        folder / "sub" / "muse8.dcm"
    )
    make_ecg(seconds=3.0).write(folder / "short.dcm")
    (folder / "notes.txt").write_text("not an ECG")
    return folder


def test_table_on_the_real_sample():
    code, text = run("inspect", str(SAMPLE))
    assert code == 0
    assert "12-lead ECG Waveform Storage" in text
    assert "RHYTHM" in text and "1000 Hz" in text and "10.00 s" in text
    assert "I II III aVR aVL aVF V1 V2 V3 V4 V5 V6" in text
    assert "leads derived     none" in text
    lead_rows = [line.split() for line in text.splitlines() if line.strip().startswith("V6 ")]
    assert len(lead_rows) == 1 and float(lead_rows[0][1]) < 0 < float(lead_rows[0][2])


def test_json_lines_for_a_directory(mixed_dir):
    code, text = run("inspect", str(mixed_dir), "--format", "json")
    assert code == 1  # one file is too short, one is not DICOM
    records = {Path(r["path"]).name: r for r in map(json.loads, text.splitlines())}
    assert set(records) == {"mortara.dcm", "muse8.dcm", "short.dcm", "notes.txt"}
    for record in records.values():
        assert set(record) >= JSON_KEYS
    good = records["mortara.dcm"]
    assert good["ok"] and good["error"] is None
    assert good["sampling_frequency"] == 1000 and good["duration_s"] == 10.0
    muse = records["muse8.dcm"]
    assert muse["ok"] and muse["leads_derived"] == ["III", "aVR", "aVL", "aVF"]
    assert muse["sampling_frequency"] == 250
    short = records["short.dcm"]
    assert not short["ok"] and "3.00 s long" in short["error"]
    assert short["sop_instance_uid"]
    assert not records["notes.txt"]["ok"] and "not" in records["notes.txt"]["error"]


def test_table_prints_the_reason(mixed_dir):
    code, text = run("inspect", str(mixed_dir / "short.dcm"))
    assert code == 1
    assert "INVALID: recording is 3.00 s long" in text


def test_missing_file_is_reported_not_raised(tmp_path):
    code, text = run("inspect", str(tmp_path / "absent.dcm"), "--format", "json")
    assert code == 1
    assert "cannot read" in json.loads(text)["error"]


def test_installed_command(tmp_path):
    command = Path(sys.executable).parent / "ecg2age-dicom"
    result = subprocess.run(
        [str(command), "inspect", str(SAMPLE), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
