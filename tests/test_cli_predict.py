"""``predict``, ``model info`` / ``verify``, ``results`` and ``db upgrade`` as a user runs them,
with the shipped default model."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from ecg2age_dicom.model import load_card
from ecg2age_dicom.waveform import LEADS, REQUIRED_LEADS
from tests.cli_runner import run
from tests.ecg_factory import ecg_signal, make_ecg
from tests.model_factory import ml4h_like_model, write_card

EIGHT_LEADS = REQUIRED_LEADS  # I, II, V1-V6: the limb leads are derived

SAMPLE = Path(get_testdata_file("waveform_ecg.dcm"))
KEYS = {
    "path",
    "sop_instance_uid",
    "predicted_age_years",
    "chronological_age_years",
    "age_gap_years",
    "quality_flags",
    "model_name",
    "model_version",
    "error",
}


pytestmark = pytest.mark.usefixtures("in_repository")


def test_predict_the_real_sample_with_the_default_model(tmp_path):
    code, text = run("predict", str(SAMPLE), "--format", "json", "--sr-dir", str(tmp_path / "sr"))
    assert code == 0
    row = json.loads(text)
    assert set(row) >= KEYS
    assert row["model_name"] == "ECG2Age-PTBXL" and row["error"] is None
    assert 0 < row["predicted_age_years"] < 120
    assert row["chronological_age_years"] == 42.0  # Patient's Age 042Y
    assert row["age_gap_years"] == pytest.approx(row["predicted_age_years"] - 42.0, abs=0.02)
    # the default card's [age_gap] correction: the gap less the gap expected at 42
    correction = load_card(Path("model_zoo/ECG2Age-PTBXL/model.toml")).gap_correction
    assert correction is not None
    expected = correction.corrected_gap(row["predicted_age_years"], 42.0)
    assert row["age_gap_corrected_years"] == pytest.approx(expected, abs=0.01)
    report = pydicom.dcmread(row["sr_path"])
    assert report.StudyInstanceUID == pydicom.dcmread(SAMPLE).StudyInstanceUID
    assert report.SOPInstanceUID == row["sr_sop_instance_uid"]
    document = pydicom.dcmread(row["pdf_path"])  # [report] outputs = ["sr", "pdf"] by default
    assert document.SOPInstanceUID == row["pdf_sop_instance_uid"]
    assert document.StudyInstanceUID == report.StudyInstanceUID
    assert document.EncapsulatedDocument.startswith(b"%PDF")
    assert sorted(p.name for p in (tmp_path / "sr").iterdir()) == sorted(
        f"{row[kind]}.dcm" for kind in ("sr_sop_instance_uid", "pdf_sop_instance_uid")
    )


def test_predict_writes_only_the_configured_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("ECG2AGE__REPORT__OUTPUTS", '["pdf", "sc"]')
    monkeypatch.setenv("ECG2AGE__REPORT__PAPER", "letter")
    code, text = run("predict", str(SAMPLE), "--format", "csv", "--out-dir", str(tmp_path))
    (row,) = csv.DictReader(io.StringIO(text))
    assert code == 0 and row["sr_path"] == "" and row["pdf_path"] and row["sc_path"]
    assert sorted(p.name for p in tmp_path.glob("*.dcm")) == sorted(
        f"{row[kind]}.dcm" for kind in ("pdf_sop_instance_uid", "sc_sop_instance_uid")
    )
    image = pydicom.dcmread(row["sc_path"])
    # letter at 150 dpi (PDFium rounds a pixel up)
    assert (image.Columns - 11 * 150, image.Rows - round(8.5 * 150)) in [(0, 0), (1, 1), (1, 0)]


def test_predict_reports_bad_files_and_goes_on(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE, folder / "a.dcm")
    make_ecg(leads=("I", "II", "V1")).write(folder / "b.dcm")
    make_ecg(patient_age=None, fs=250).write(folder / "c.dcm")
    noise = np.random.default_rng(7).uniform(-60, 60, (5000, 12))
    make_ecg(signal=noise, leads=EIGHT_LEADS).write(folder / "d.dcm")
    disconnected = ecg_signal(500, 10.0)
    disconnected[:, LEADS.index("V3")] = 0.0
    make_ecg(signal=disconnected).write(folder / "e.dcm")
    code, text = run("predict", str(folder), "--format", "csv")
    assert code == 1
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(text))}
    assert rows["a.dcm"]["predicted_age_years"] and not rows["a.dcm"]["error"]
    assert "V2" in rows["b.dcm"]["error"] and not rows["b.dcm"]["predicted_age_years"]
    assert rows["c.dcm"]["predicted_age_years"] and not rows["c.dcm"]["age_gap_years"]
    assert "no QRS rhythm" in rows["d.dcm"]["error"] and not rows["d.dcm"]["predicted_age_years"]
    assert rows["e.dcm"]["predicted_age_years"] and rows["e.dcm"]["quality_flags"] == "flat_lead:V3"
    assert rows["a.dcm"]["quality_flags"] == ""
    code, table = run("predict", str(folder))
    assert "b.dcm: required lead(s)" in table and "model: ECG2Age-PTBXL 1.0.0" in table
    assert "e.dcm  (signal quality: flat_lead:V3)" in table
    code, text = run("predict", str(folder / "e.dcm"), "--format", "json")
    assert json.loads(text)["quality_flags"] == ["flat_lead:V3"]


def test_model_info_and_verify():
    code, text = run("model", "info", "--format", "json")
    info = json.loads(text)
    assert code == 0 and info["file_present"] and info["sha256_ok"]
    assert info["metrics"]["ptbxl_test"]["n"] == 4259
    code, text = run("model", "verify")
    assert code == 0 and "sha256 OK" in text and "predicted" in text
    assert "reference set: 200 real ECGs" in text
    card_line = next(line for line in text.splitlines() if line.strip().startswith("card ("))
    assert card_line.endswith("yes")
    code, text = run("model", "info", "--card", "model_zoo/ECG2Age/model.toml")
    assert code == 0 and "MISSING (model fetch)" in text


def test_results_and_db_upgrade(tmp_path):
    assert run("db", "upgrade")[0] == 0
    code, text = run("results", "--format", "json")
    assert code == 0 and json.loads(text) == []


@pytest.mark.parametrize(
    ("sop_class", "reason"),
    [
        ("1.2.840.10008.5.1.4.1.1.9.2.1", "Hemodynamic Waveform Storage) is not scored"),
        ("1.2.840.10008.5.1.4.1.1.104.1", "Encapsulated PDF Storage) is not scored"),
        ("", "SOP Class UID (0008,0016) is missing"),
    ],
)
def test_predict_scores_only_what_the_listener_accepts(tmp_path, sop_class, reason):
    """The same rule everywhere: objects holding a waveform that are not ECGs are refused."""
    ecg = make_ecg()
    ecg.dataset.SOPClassUID = sop_class
    path = ecg.write(tmp_path / "not-an-ecg.dcm")
    code, text = run("predict", str(path), "--format", "json")
    row = json.loads(text)
    assert code == 1 and reason in row["error"] and row["predicted_age_years"] is None
    code, text = run("inspect", str(path), "--format", "json")
    assert code == 1 and reason in json.loads(text)["error"]


def test_config_and_verbose_are_taken_before_or_after_the_command(tmp_path, capsys):
    config = tmp_path / "my.toml"
    config.write_text("[listener]\nport = 99999\n")
    for argv in (["--config", str(config), "results"], ["results", "--config", str(config), "-v"]):
        assert run(*argv)[0] == 2
        assert "listener.port" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("transform", "code", "says"),
    [
        (
            "",
            1,
            "FAILED: the card's [output] scale/offset gives implausible ages on real ECGs; "
            "plausible: ml4h de-normalisation",
        ),
        ("scale = 20.7367\noffset = 54.4974\n", 0, "card (x 20.7367 + 54.4974)"),
    ],
)
def test_verify_checks_the_output_transform_on_real_ecgs(tmp_path, transform, code, says):
    model = ml4h_like_model(tmp_path / "tiny.keras")  # a z-scored age output
    card = write_card(
        tmp_path, model, "[output]\nkey = 'output_instance_age_continuous'\n" + transform
    )
    result, text = run("model", "verify", "--card", str(card))
    assert result == code and says in text
