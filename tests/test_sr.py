"""The Structured Report: content read back with pydicom, and DCMTK / dicom3tools checks."""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
import warnings
from datetime import datetime
from pathlib import Path

import pydicom
import pydicom.config
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from ecg2age_dicom.age import GapCorrection
from ecg2age_dicom.dicomfile import write_atomically
from ecg2age_dicom.sr import (
    AlgorithmDescription,
    SRClass,
    build_report,
    build_report_with_highdicom,
    codes,
    series_uid_for,
)
from tests.ecg_factory import make_ecg

RESEARCH_MODEL = AlgorithmDescription(
    "ECG2Age-PTBXL", "1.0.0", "Research and demonstration only: NOT FOR CLINICAL USE.", False
)
SOP_CLASS = {
    SRClass.COMPREHENSIVE: "1.2.840.10008.5.1.4.1.1.88.33",
    SRClass.ENHANCED: "1.2.840.10008.5.1.4.1.1.88.22",
    SRClass.COMPREHENSIVE_3D: "1.2.840.10008.5.1.4.1.1.88.34",
}
PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


@pytest.fixture(scope="module")
def sample():
    return pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))


def odd_ecg():
    """A factory ECG with the values real carts write: a name in ISO 2022 IR 87, a study
    description with line breaks, a dashed birth date, an invalid time, "male"."""
    ecg = make_ecg(patient_age=None)
    dataset = ecg.dataset
    dataset.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    dataset.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    dataset.StudyDescription = "ECG:Sinus Rhythm\r\nNormal ECG\r\n" + "x" * 60
    with pydicom.config.disable_value_validation():
        dataset.PatientBirthDate = "1970-01-01"
        dataset.StudyTime = "25:61"
        dataset.PatientSex = "male"
        buffer = io.BytesIO()
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))  # encoded, as received


def bare_ecg():
    """A factory ECG with no patient / study attributes beyond the UIDs."""
    dataset = make_ecg().dataset
    for keyword in PATIENT_KEYWORDS:
        if keyword in dataset:
            delattr(dataset, keyword)
    return dataset


def items(dataset):
    """Every content item of an SR tree, depth first."""
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from items(item)


def concept(item) -> tuple[str, str]:
    name = item.ConceptNameCodeSequence[0]
    return name.CodeValue, name.CodingSchemeDesignator


def numbers(dataset) -> dict[tuple[str, str], tuple[float, str]]:
    found = {}
    for item in items(dataset):
        if item.ValueType == "NUM":
            value = item.MeasuredValueSequence[0]
            found[concept(item)] = (
                float(value.NumericValue),
                value.MeasurementUnitsCodeSequence[0].CodeValue,
            )
    return found


def reread(report, tmp_path: Path):
    """The report as a PACS reads it from disk."""
    return pydicom.dcmread(write_atomically(tmp_path / "sr.dcm", report.encoded))


@pytest.mark.parametrize("sr_class", list(SRClass))
def test_report_on_the_real_sample(sample, tmp_path, sr_class):
    document = reread(
        build_report(sample, RESEARCH_MODEL, 47.123456789, 42.0, sr_class=sr_class), tmp_path
    )
    assert document.SOPClassUID == SOP_CLASS[sr_class]
    assert document.Modality == "SR"
    assert document.StudyInstanceUID == sample.StudyInstanceUID
    assert document.SeriesInstanceUID not in (sample.SeriesInstanceUID, "")
    assert document.SeriesInstanceUID == series_uid_for(sample.StudyInstanceUID, RESEARCH_MODEL)
    assert "ECG2Age-PTBXL 1.0.0" in document.SeriesDescription
    assert "not for clinical use" in document.SeriesDescription
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        assert document.get(keyword) == sample.get(keyword)
    evidence = document.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == sample.StudyInstanceUID
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == sample.SOPInstanceUID
    assert referenced.ReferencedSOPClassUID == sample.SOPClassUID

    assert document.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    values = numbers(document)
    assert values[(codes.PREDICTED_AGE.value, "99ECG2AGE")] == (47.12, "a")
    assert values[(codes.CHRONOLOGICAL_AGE.value, "LN")] == (42.0, "a")
    assert values[(codes.AGE_GAP.value, "99ECG2AGE")] == (5.12, "a")
    texts = {
        item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue
        for item in items(document)
        if item.ValueType == "TEXT"
    }
    assert texts["Algorithm Name"] == "ECG2Age-PTBXL" and texts["Algorithm Version"] == "1.0.0"
    assert "NOT FOR CLINICAL USE" in texts[codes.INTENDED_USE.meaning]
    coded = {
        concept(item): item.ConceptCodeSequence[0].CodeValue
        for item in items(document)
        if item.ValueType == "CODE"
    }
    assert coded[(codes.INTENDED_USE.value, "99ECG2AGE")] == codes.RESEARCH_ONLY.value
    schemes = [i.CodingSchemeDesignator for i in document.CodingSchemeIdentificationSequence]
    assert "99ECG2AGE" in schemes


def test_without_chronological_age_only_the_prediction_is_reported(tmp_path):
    document = reread(build_report(bare_ecg(), RESEARCH_MODEL, 30.0), tmp_path)
    assert list(numbers(document)) == [(codes.PREDICTED_AGE.value, "99ECG2AGE")]
    assert document.PatientName == "" and document.PatientID == ""


def test_one_series_per_model_version_in_a_study(sample):
    first = build_report(sample, RESEARCH_MODEL, 40.0).dataset()
    second = build_report(sample, RESEARCH_MODEL, 41.0).dataset()
    other = build_report(
        sample, AlgorithmDescription("ECG2Age", "2", "research", False), 41.0
    ).dataset()
    assert first.SeriesInstanceUID == second.SeriesInstanceUID != other.SeriesInstanceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID


def test_validated_model_does_not_say_research_only(sample):
    document = build_report(
        sample, AlgorithmDescription("X", "1", "diagnostic", True), 40.0
    ).dataset()
    assert "not for clinical use" not in document.SeriesDescription
    coded = [
        item.ConceptCodeSequence[0].CodeValue
        for item in items(document)
        if item.ValueType == "CODE"
    ]
    assert codes.CLINICALLY_VALIDATED.value in coded


def test_no_patient_name_reaches_warnings_or_logs(sample, caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_report(sample, RESEARCH_MODEL, 40.0)
    said = " ".join(str(w.message) for w in caught) + caplog.text
    assert str(sample.PatientName) not in said


needs_tools = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("dciodvfy", "dsrdump", "dsr2html")),
    reason="dicom3tools / dcmtk not installed (make install installs them)",
)


def source_ecg(sample, source: str):
    return {"sample": lambda: sample, "bare": bare_ecg, "odd": odd_ecg}[source]()


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 192", "Müller^Jürgen"),
        ("ISO_IR 100", "Äneas^Rüdiger"),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("ISO_IR 192", "Wang^XiaoDong=王^小東"),
    ],
)
def test_a_name_in_any_character_set_reads_back_as_sent(tmp_path, charset, name):
    ecg = make_ecg().dataset
    ecg.SpecificCharacterSet = charset
    ecg.PatientName = name
    ecg.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ecg.save_as(buffer, enforce_file_format=True)
    received = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    document = reread(build_report(received, RESEARCH_MODEL, 50.0), tmp_path)
    assert document.SpecificCharacterSet == "ISO_IR 192"
    assert str(document.PatientName) == name


def test_copied_values_are_cleaned_to_their_vr(tmp_path):
    document = reread(build_report(odd_ecg(), RESEARCH_MODEL, 50.0), tmp_path)
    assert str(document.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert document.StudyDescription == "ECG:Sinus Rhythm Normal ECG " + "x" * 36
    assert document.PatientBirthDate == "19700101"
    assert document.StudyTime == "" and document.PatientSex == ""


@needs_tools
@pytest.mark.parametrize("source", ["sample", "bare", "odd"])
@pytest.mark.parametrize("sr_class", list(SRClass))
def test_dciodvfy_dsrdump_and_dsr2html_accept_the_report(sample, tmp_path, source, sr_class):
    ecg = source_ecg(sample, source)
    chronological = 42.0 if source == "sample" else None
    path = write_atomically(
        tmp_path / "sr.dcm",
        build_report(ecg, RESEARCH_MODEL, 63.2, chronological, sr_class=sr_class).encoded,
    )
    verify = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    errors = [
        line for line in (verify.stdout + verify.stderr).splitlines() if line.startswith("Error")
    ]
    assert errors == []
    dump = subprocess.run(["dsrdump", "+Pt", str(path)], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert 'NUM:(,,"ECG-predicted age")="63.2" (a,UCUM,"year")' in dump.stdout
    assert "TID 1500" in dump.stdout
    html = subprocess.run(["dsr2html", str(path)], capture_output=True, text=True, timeout=60)
    assert html.returncode == 0, html.stderr
    assert "63.2 a" in html.stdout and "Not validated for clinical use" in html.stdout


def _comparable(document) -> dict:
    """A report as JSON, without what differs between any two builds (creation time, the
    random tracking UID)."""
    buffer = io.BytesIO()
    document.save_as(buffer, enforce_file_format=True)
    document = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    del document.InstanceCreationDate, document.InstanceCreationTime
    document.ContributingEquipmentSequence[0].ContributionDateTime = "20000101"
    for item in items(document):
        if item.ValueType == "UIDREF" and concept(item) == ("112040", "DCM"):
            item.UID = "1.2.3"
    return document.to_json_dict()


@pytest.mark.parametrize("source", ["sample", "bare", "odd"])
@pytest.mark.parametrize("sr_class", list(SRClass))
def test_the_fast_path_builds_the_same_report_as_highdicom(sample, source, sr_class):
    ecg = source_ecg(sample, source)
    chronological = 42.0 if source == "sample" else None
    when = datetime(2026, 1, 2, 3, 4, 5, 600000)
    flags = ("flat_lead:V3", "baseline_wander:II") if source == "odd" else ()
    options = {
        "sr_class": sr_class,
        "sop_instance_uid": "2.25.99",
        "content_datetime": when,
        "quality_flags": flags,
    }
    fast = build_report(ecg, RESEARCH_MODEL, 61.234, chronological, **options).dataset()
    reference = build_report_with_highdicom(ecg, RESEARCH_MODEL, 61.234, chronological, **options)
    assert _comparable(fast) == _comparable(reference)


@pytest.mark.parametrize("flags, text", [((), "none"), (("flat_lead:V3", "artefact:V5"), None)])
def test_the_report_states_the_signal_quality(sample, tmp_path, flags, text):
    report = build_report(sample, RESEARCH_MODEL, 61.0, quality_flags=flags).dataset()
    values = [
        item.TextValue for item in items(report) if concept(item) == ("SIGQUALITY", "99ECG2AGE")
    ]
    assert values == [text or "flat_lead:V3; artefact:V5"]


CORRECTED_MODEL = dataclasses.replace(
    RESEARCH_MODEL,
    gap_correction=GapCorrection("quadratic", (5.0, 0.25, -0.005), "PTB-XL folds 5-8 (n=8829)"),
)


@pytest.mark.parametrize("builder", ["fast", "highdicom"])
def test_the_report_carries_the_corrected_gap_and_names_its_correction(sample, builder):
    if builder == "fast":
        document = build_report(sample, CORRECTED_MODEL, 61.0, 42.0).dataset()
    else:
        document = build_report_with_highdicom(sample, CORRECTED_MODEL, 61.0, 42.0)
    values = numbers(document)
    # gap 19, expected at 42: 5 + 0.25 x 42 - 0.005 x 42^2 = 6.68; corrected 12.32
    assert values[(codes.AGE_GAP.value, "99ECG2AGE")] == (19.0, "a")
    assert values[(codes.CORRECTED_AGE_GAP.value, "99ECG2AGE")] == (12.32, "a")
    (method,) = [
        item.TextValue
        for item in items(document)
        if concept(item) == (codes.AGE_GAP_CORRECTION.value, "99ECG2AGE")
    ]
    assert method.startswith("quadratic (Smith et al. 2019): gap - (5 + 0.25 x age + -0.005")
    assert method.endswith("fitted on PTB-XL folds 5-8 (n=8829)")
    without_age = numbers(build_report(sample, CORRECTED_MODEL, 61.0).dataset())
    assert (codes.CORRECTED_AGE_GAP.value, "99ECG2AGE") not in without_age


def test_the_fast_path_builds_the_same_corrected_report_as_highdicom(sample):
    options = {"sop_instance_uid": "2.25.98", "content_datetime": datetime(2026, 1, 2, 3, 4, 5, 6)}
    fast = build_report(sample, CORRECTED_MODEL, 70.5, 80.0, **options).dataset()
    reference = build_report_with_highdicom(sample, CORRECTED_MODEL, 70.5, 80.0, **options)
    assert _comparable(fast) == _comparable(reference)
