"""The PDF report page and its Encapsulated PDF instance: what a viewer shows, measured."""

from __future__ import annotations

import dataclasses
import io
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pypdf
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.uid import EncapsulatedPDFStorage, SecondaryCaptureImageStorage

from ecg2age_dicom import scoring
from ecg2age_dicom.age import GapCorrection
from ecg2age_dicom.dicomfile import read_dataset, write_atomically
from ecg2age_dicom.model import load_card
from ecg2age_dicom.pdf import PageResult, build_capture, build_pdf_document, render_page, template
from ecg2age_dicom.pdf import capture as raster
from ecg2age_dicom.pdf import page as layout
from ecg2age_dicom.pdf.document import build_pdf_dataset
from ecg2age_dicom.sr import AlgorithmDescription, build_report
from ecg2age_dicom.waveform import REQUIRED_LEADS
from tests.ecg_factory import make_ecg
from tests.test_sr import bare_ecg, odd_ecg

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "model_zoo" / "ECG2Age-PTBXL" / "model.toml"
RESEARCH = AlgorithmDescription("ECG2Age-PTBXL", "1.0.0", "Research only.", False)
CLINICAL = AlgorithmDescription("Validated", "2.0", "Adults, resting ECG.", True)
RESULT = PageResult(61.23, 42.0, 19.23, ("baseline_wander:V1",))


@pytest.fixture(scope="module")
def sample() -> scoring.Scorable:
    card = load_card(CARD)
    return scoring.prepare(read_dataset(Path(get_testdata_file("waveform_ecg.dcm"))), card)


def page_of(item: scoring.Scorable, algorithm=RESEARCH, paper="A4", result=RESULT) -> bytes:
    return render_page(
        item.header, item.standard_signal, item.ecg.leads_derived, result, algorithm, paper
    )


def text_of(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1
    return reader.pages[0].extract_text()


def test_the_page_states_result_model_quality_and_patient(sample):
    text = text_of(page_of(sample))
    for expected in (
        "ECG-predicted age: 61.2 years",
        "Chronological age: 42.0 years",
        "Age gap (predicted - chronological): +19.2 years",
        "Model: ECG2Age-PTBXL 1.0.0. Intended use: Research only.",
        "Signal quality flags: baseline_wander:V1",
        "Not for clinical use",
        "642341",  # Patient ID
        "1971-01-23",  # birth date
        "25 mm/s, 10 mm/mV",
    ):
        assert expected in text


def test_a_validated_model_does_not_say_not_for_clinical_use(sample):
    assert "Not for clinical use" not in text_of(page_of(sample, CLINICAL))


def test_an_unknown_age_is_said_so(sample):
    result = PageResult(55.0, None, None, ())
    text = text_of(page_of(sample, result=result))
    assert "Chronological age: not known" in text and "Signal quality flags: none" in text


@pytest.mark.parametrize(("paper", "size_mm"), [("A4", (297, 210)), ("letter", (279.4, 215.9))])
def test_one_landscape_page_of_the_configured_paper(sample, paper, size_mm):
    box = pypdf.PdfReader(io.BytesIO(page_of(sample, paper=paper))).pages[0].mediabox
    assert (float(box.width) / 72 * 25.4, float(box.height) / 72 * 25.4) == pytest.approx(
        size_mm, abs=0.2
    )


def test_derived_leads_are_marked(tmp_path):
    built = make_ecg(leads=REQUIRED_LEADS)
    item = scoring.prepare(built.dataset, load_card(CARD))
    text = text_of(page_of(item))
    assert all(f"{lead}*" in text for lead in ("III", "aVR", "aVL", "aVF"))
    assert "* derived from I and II" in text and "V1*" not in text


def test_the_page_draws_10_s_at_500_hz_whatever_rate_the_model_takes():
    card = load_card(CARD)
    card = card.model_copy(
        update={"input": card.input.model_copy(update={"sampling_rate_hz": 250, "samples": 3000})}
    )
    item = scoring.prepare(make_ecg(fs=1000, seconds=10.0).dataset, card)
    assert item.model_input.shape == (3000, 12)
    assert item.standard_signal.shape == (5000, 12)
    lead_ii = item.standard_signal[:, 1]
    # the same 1-9 s at twice the rate (the 12 s model input pads 1 s before the recording)
    assert np.corrcoef(lead_ii[500:4500:2], item.model_input[500:2500, 1])[0, 1] > 0.99


def pulse_pixels(image: np.ndarray, pixels_per_mm: float) -> int:
    """Dark pixels in the column 1 mm after the first row's pulse starts, around its 10 mm."""
    height_mm = image.shape[0] / pixels_per_mm
    x = round((layout.MARGIN_MM + 1.0 + 1.0) * pixels_per_mm)
    top = round((height_mm - layout.row_baseline_mm(0) - 10.0) * pixels_per_mm)
    margin = round(3 * pixels_per_mm)
    window = image[top - margin : top + round(10 * pixels_per_mm) + margin, x - 2 : x + 3]
    return int((window.min(axis=1) < 100).sum())


def test_the_calibration_pulse_is_10_mm_tall_on_the_rendered_page(sample, tmp_path):
    pdf = tmp_path / "page.pdf"
    pdf.write_bytes(page_of(sample))
    # 254 dpi: 10 pixels per millimetre.
    subprocess.run(
        ["pdftoppm", "-r", "254", "-gray", "-singlefile", str(pdf), str(tmp_path / "page")],
        check=True,
        timeout=60,
    )
    image = _read_pgm(tmp_path / "page.pgm")
    assert 98 <= pulse_pixels(image, 10.0) <= 103  # 10 mm, within a line width


def _read_pgm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    magic, width, height, maxval, pixels = data.split(maxsplit=4)
    assert magic == b"P5" and maxval == b"255"
    return np.frombuffer(pixels, dtype=np.uint8).reshape(int(height), int(width))


def test_the_encapsulated_pdf_is_in_the_ecgs_study_beside_the_sr(sample, tmp_path):
    pdf = page_of(sample)
    uid, encoded = build_pdf_document(sample.header, pdf, RESEARCH)
    document = pydicom.dcmread(io.BytesIO(encoded))
    assert document.SOPClassUID == EncapsulatedPDFStorage and document.SOPInstanceUID == uid
    assert document.StudyInstanceUID == sample.header.StudyInstanceUID
    assert document.PatientID == sample.header.PatientID
    assert document.EncapsulatedDocument[: len(pdf)] == pdf
    assert document.EncapsulatedDocumentLength == len(pdf)
    assert document.MIMETypeOfEncapsulatedDocument == "application/pdf"
    source = document.SourceInstanceSequence[0]
    assert source.ReferencedSOPInstanceUID == sample.header.SOPInstanceUID
    assert "not for clinical use" in document.SeriesDescription
    sr = build_report(sample.header, RESEARCH, 61.23, 42.0).dataset()
    assert document.SeriesInstanceUID != sr.SeriesInstanceUID
    again = pydicom.dcmread(io.BytesIO(build_pdf_document(sample.header, pdf, RESEARCH)[1]))
    assert again.SeriesInstanceUID == document.SeriesInstanceUID  # one series per study


def _as_read(document) -> tuple[dict, dict]:
    """An instance as read from its Part 10 bytes: its dataset and File Meta as JSON."""
    read = pydicom.dcmread(io.BytesIO(document))
    return read.to_json_dict(), read.file_meta.to_json_dict()


@pytest.mark.parametrize("source", ["sample", "bare", "odd"])
@pytest.mark.parametrize("length", [2001, 2002])  # odd lengths are padded
def test_the_encoded_pdf_instance_is_the_one_pydicom_writes(sample, source, length):
    ecg = {"sample": lambda: sample.header, "bare": bare_ecg, "odd": odd_ecg}[source]()
    pdf = (b"%PDF-1.4\n" + bytes(range(256)) * 8)[:length]
    options = {"sop_instance_uid": "2.25.77", "content_datetime": datetime(2026, 1, 2, 3, 4, 5)}
    uid, encoded = build_pdf_document(ecg, pdf, RESEARCH, **options)
    buffer = io.BytesIO()
    build_pdf_dataset(ecg, pdf, RESEARCH, **options).save_as(buffer, enforce_file_format=True)
    assert uid == "2.25.77"
    assert _as_read(encoded) == _as_read(buffer.getvalue())
    assert pydicom.dcmread(io.BytesIO(encoded)).EncapsulatedDocumentLength == length


@pytest.mark.parametrize(
    ("build", "iod"), [(build_pdf_document, "EncapsulatedPDF"), (build_capture, "SCImage")]
)
def test_dciodvfy_accepts_the_pdf_and_the_capture(sample, tmp_path, build, iod):
    path = write_atomically(
        tmp_path / "doc.dcm", build(sample.header, page_of(sample), RESEARCH)[1]
    )
    verify = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    output = verify.stdout + verify.stderr
    assert iod in output
    assert [line for line in output.splitlines() if line.startswith("Error")] == []


@pytest.mark.parametrize(
    "name", ["Müller^Jürgen", "Иванов^Иван", "Yamada^Tarou=山田^太郎=やまだ^たろう"]
)
def test_names_in_other_scripts_read_back_from_the_page(sample, name):
    header = sample.header
    saved = header.PatientName
    header.PatientName = name
    try:
        text = text_of(page_of(sample))
    finally:
        header.PatientName = saved
    family, given = name.split("=")[0].split("^")
    assert f"{family}, {given}" in text


@given(st.lists(st.integers(-(10**5) + 1, 10**5 - 1), max_size=40))
def test_a_number_template_writes_each_value_as_percent_d_does(values):
    template = "".join(f"{index * 10} %d l " for index in range(len(values))) + "S"
    filled = layout.NumberTemplate.of(template).fill(np.array(values, dtype=np.int64))
    assert filled.split() == (template % tuple(values)).split()
    assert len(filled) == len(template) + (layout.FIELD - 2) * len(values)  # fixed fields


def test_a_number_template_clips_what_its_fields_cannot_hold():
    template = layout.NumberTemplate.of("%d %d %d")
    assert template.fill(np.array([10**6, -(10**9), 7])).split() == ["99999", "-99999", "7"]
    with pytest.raises(ValueError, match="2 values for 3 fields"):
        template.fill(np.array([1, 2]))


def drawn_by_reportlab(item, algorithm=RESEARCH, paper="A4", result=RESULT) -> bytes:
    texts = layout.page_texts(item.header, item.ecg.leads_derived, result, algorithm, paper)
    traces = layout.trace_layer(item.standard_signal)
    return layout.draw_page(texts, traces, layout.page_title(algorithm), paper)


CORRECTED = dataclasses.replace(
    RESEARCH, gap_correction=GapCorrection("linear", (1.0, -0.1), "PTB-XL folds 5-8")
)


@pytest.mark.parametrize(
    ("ecg", "algorithm", "paper", "result"),
    [
        ("sample", RESEARCH, "A4", RESULT),
        ("sample", CLINICAL, "letter", PageResult(30.04, None, None, ())),
        ("derived", CORRECTED, "A4", dataclasses.replace(RESULT, age_gap_corrected_years=-3.2)),
        ("bare", RESEARCH, "A4", RESULT),
        ("odd", RESEARCH, "letter", RESULT),
    ],
)
def test_the_page_from_its_template_is_the_page_reportlab_draws(
    sample, ecg, algorithm, paper, result
):
    card = load_card(CARD)
    item = {
        "sample": sample,
        "derived": scoring.prepare(make_ecg(leads=REQUIRED_LEADS).dataset, card),
        "bare": scoring.prepare(bare_ecg(), card),
        "odd": scoring.prepare(odd_ecg(), card),
    }[ecg]
    assert page_of(item, algorithm, paper, result) == drawn_by_reportlab(
        item, algorithm, paper, result
    )


@pytest.mark.parametrize(
    ("name", "from_template"),
    [
        ("O'Brien (Jr)^Ann\\Marie", True),  # escaped as ReportLab escapes them
        ("Müller^Jürgen", True),  # WinAnsi
        ("Иванов^Иван", False),  # another font: ReportLab draws it
    ],
)
def test_a_page_is_filled_from_its_template_when_its_texts_allow(
    sample, monkeypatch, name, from_template
):
    page_of(sample)  # the layout's template, drawn once
    header = sample.header
    saved = header.PatientName
    header.PatientName = name
    try:
        expected = drawn_by_reportlab(sample)

        def not_drawn(*args, **kwargs):
            raise AssertionError("drawn by ReportLab")

        monkeypatch.setattr(template, "draw_page", not_drawn)
        if from_template:
            assert page_of(sample) == expected
        else:
            with pytest.raises(AssertionError, match="drawn by ReportLab"):
                page_of(sample)
    finally:
        header.PatientName = saved


def test_the_same_result_gives_the_same_page(sample):
    assert page_of(sample) == page_of(sample)  # invariant mode: no clock, no random ID


def test_the_capture_is_the_page_in_the_ecgs_study_in_its_own_series(sample):
    pdf = page_of(sample)
    uid, encoded = build_capture(sample.header, pdf, RESEARCH)
    image = pydicom.dcmread(io.BytesIO(encoded))
    assert image.SOPClassUID == SecondaryCaptureImageStorage and image.SOPInstanceUID == uid
    assert image.StudyInstanceUID == sample.header.StudyInstanceUID
    assert (image.PatientID, image.PatientName) == (
        sample.header.PatientID,
        sample.header.PatientName,
    )
    assert image.SourceInstanceSequence[0].ReferencedSOPInstanceUID == sample.header.SOPInstanceUID
    assert image.BurnedInAnnotation == "YES"
    assert "not for clinical use" in image.SeriesDescription
    series = {
        image.SeriesInstanceUID,
        pydicom.dcmread(
            io.BytesIO(build_pdf_document(sample.header, pdf, RESEARCH)[1])
        ).SeriesInstanceUID,
        build_report(sample.header, RESEARCH, 61.23, 42.0).dataset().SeriesInstanceUID,
    }
    assert len(series) == 3
    # A4 landscape at 150 dpi, in colour
    assert (image.Rows, image.Columns, image.SamplesPerPixel) == (1241, 1754, 3)
    assert image.PhotometricInterpretation == "RGB"
    assert np.array_equal(image.pixel_array, raster.rasterise(pdf))


def test_the_capture_keeps_the_scale_its_pixel_spacing_states(sample):
    image = pydicom.dcmread(io.BytesIO(build_capture(sample.header, page_of(sample), RESEARCH)[1]))
    spacing = [float(value) for value in image.NominalScannedPixelSpacing]
    assert spacing[0] == spacing[1] == pytest.approx(25.4 / raster.DPI, rel=1e-4)
    grey = image.pixel_array.min(axis=2)  # black where every channel is dark
    expected = 10.0 / spacing[0]  # the 1 mV pulse, 10 mm tall: about 59 pixels
    assert abs(pulse_pixels(grey, 1 / spacing[0]) - expected) <= 3


def test_the_page_shows_the_corrected_gap_where_the_card_defines_one(sample):
    correction = GapCorrection("quadratic", (5.0, 0.25, -0.005), "PTB-XL folds 5-8 (n=8829)")
    corrected = dataclasses.replace(RESEARCH, gap_correction=correction)
    text = text_of(
        page_of(
            sample, corrected, result=dataclasses.replace(RESULT, age_gap_corrected_years=12.54)
        )
    )
    assert "Age gap corrected for age: +12.5 years" in text
    assert "(quadratic correction fitted on PTB-XL folds 5-8 (n=8829))" in text
    assert "corrected" not in text_of(page_of(sample))  # no correction in the card: no line


def test_prepared_templates_serve_the_first_ecg(sample, monkeypatch):
    template._template.cache_clear()
    template.prepare(RESEARCH, "A4")

    def not_drawn(*args, **kwargs):
        raise AssertionError("drawn by ReportLab")

    monkeypatch.setattr(template, "draw_page", not_drawn)
    assert text_of(page_of(sample)).startswith("I")  # from the template made beforehand
