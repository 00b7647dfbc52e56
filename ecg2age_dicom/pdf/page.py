"""The one-page ECG report a clinician reads in any viewer: its layout, drawn with ReportLab.

:func:`page_texts` and :func:`trace_layer` lay out one ECG's page; :func:`draw_page` draws it
with ReportLab, deterministically (invariant mode: no clock, no random IDs), as a one-page
PDF, landscape A4 or Letter (it switches ReportLab's process-wide ASCII85 option off, see
:func:`_setup`). :func:`~ecg2age_dicom.pdf.template.render_page` makes the same bytes from a
template of the layout. The page:

- a header: patient name, ID, sex, birth date (or age), acquisition date and time,
  institution, each cleaned to its VR as the SR copies them;
- the ECG at standard scale, 25 mm/s and 10 mm/mV, on a 1 mm / 5 mm grid: a 1 mV calibration
  pulse at the start of each row, 3 x 4 leads of 2.5 s (I II III | aVR aVL aVF | V1 V2 V3 |
  V4 V5 V6) and a 10 s lead II rhythm strip, lead labels, derived leads marked ``*``;
- a result box: ECG-predicted age, chronological age, age gap (and the gap corrected for age
  when the model card defines a correction, with the correction named), model name and version,
  intended use, the signal-quality flags, and "Not for clinical use" whenever the model is
  not validated for it.

Text is text (searchable, copyable; Helvetica, or DejaVu Sans embedded for a header value
Helvetica cannot show). The grid and traces are written as PDF path operators (ReportLab's
``lineTo`` per point costs about 9 µs: 175 ms a page): the grid formatted once, the traces
written into a template of the layout in one vectorised pass (:class:`NumberTemplate`), in a
coordinate system of 0.01 mm, in which 1 µV at 10 mm/mV is one unit; one sample in two is
drawn (the one farther from the baseline, at the pair's first: 0.1 mm apart, no peak
lowered). Streams are deflated by ISA-L (:class:`FastFlate`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from isal import isal_zlib
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName
from reportlab import rl_config
from reportlab.lib.pagesizes import A4, landscape, letter
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfdoc, pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from ecg2age_dicom import __version__
from ecg2age_dicom.sr.report import AlgorithmDescription, copied_attributes, quality_text
from ecg2age_dicom.vr import clean_value, date_of
from ecg2age_dicom.waveform import LEADS, STANDARD_HZ

PAPER = {"A4": landscape(A4), "letter": landscape(letter)}
SAMPLING_HZ = float(STANDARD_HZ)  # of the signal drawn here
SPEED_MM_PER_S = 25.0
MARGIN_MM = 10.0
PULSE_MM = 8.0  # room for the calibration pulse before each row
ROW_MM = 30.0
COLUMNS = (("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"))
COLUMN_S = 2.5
RHYTHM_LEAD = "II"
GRID_BOTTOM_MM = 52.0
GRID_WIDTH_MM = 250.0  # 10 s at 25 mm/s
UNIT = 0.01 * mm  # one unit of the trace coordinates: 0.01 mm, or 1 µV at 10 mm/mV
_FONT, _BOLD = "Helvetica", "Helvetica-Bold"  # the PDF standard fonts: nothing to embed
# For header values outside their character set (WinAnsi): Debian's fonts-dejavu-core,
# embedded (Latin, Greek, Cyrillic...; not CJK, whose names show their alphabetic group).
_UNICODE_FONT = ("DejaVuSans-Bold", Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"))


@dataclass(frozen=True)
class PageResult:
    """What the result box says."""

    predicted_age_years: float
    chronological_age_years: float | None
    age_gap_years: float | None
    quality_flags: Sequence[str]
    age_gap_corrected_years: float | None = None  # when the card defines a correction


class FastFlate(pdfdoc.PDFStreamFilterZCompress):
    """Flate (zlib format) by Intel's ISA-L at its level 1: 0.2 ms a page, where zlib takes
    0.8 ms at its level 1 and 6 ms at ReportLab's level 6, for a page of about the same
    size (isal's level 1 compresses a little better than zlib's)."""

    def encode(self, text: str | bytes) -> bytes:
        return isal_zlib.compress(text.encode() if isinstance(text, str) else text, 1)


def _setup() -> None:
    """Binary streams: ReportLab's ASCII85 default makes a PDF a quarter larger, and costs
    110 ms a page in pure Python."""
    rl_config.useA85 = 0


def _value_font(text: str) -> str:
    """Helvetica Bold when it can show ``text``, else the Unicode font (when installed)."""
    try:
        text.encode("cp1252")
        return _BOLD
    except UnicodeEncodeError:
        name, path = _UNICODE_FONT
        if name not in pdfmetrics.getRegisteredFontNames() and path.is_file():
            pdfmetrics.registerFont(TTFont(name, str(path)))
        return name if name in pdfmetrics.getRegisteredFontNames() else _BOLD


def grid_top_mm() -> float:
    """Where the grid ends at the top: four rows above :data:`GRID_BOTTOM_MM`."""
    return GRID_BOTTOM_MM + 4 * ROW_MM


def row_baseline_mm(row: int) -> float:
    """The zero line of row 0-2 (the 3 x 4 layout) or 3 (the rhythm strip)."""
    return grid_top_mm() - ROW_MM / 2 - ROW_MM * row


# A 1 mV pulse (1000 units = 10 mm high) of 200 ms (5 mm), in trace units.
_PULSE = "0 0 m 100 0 l 100 1000 l 600 1000 l 600 0 l 700 0 l "


def _polyline(points: int, pitch: int) -> str:
    """PDF path operators of a polyline of ``points`` points ``pitch`` units apart, with a
    ``%d`` for each y."""
    return "0 %d m " + "".join(f"{pitch * k} %d l " for k in range(1, points))


def _peaks(values: np.ndarray) -> np.ndarray:
    """One value for each pair of samples (along the last axis), the one farther from the
    baseline: half the points to write (0.1 mm apart on paper), no peak lowered, none moved
    by more than one sample."""
    pairs = values[..., : values.shape[-1] // 2 * 2].reshape(*values.shape[:-1], -1, 2)
    first, second = pairs[..., 0], pairs[..., 1]
    return np.where(np.abs(second) > np.abs(first), second, first)


@lru_cache(maxsize=4)
def _grid(left_mm: float, width_mm: float) -> str:
    """The 1 mm grid (light) and the 5 mm grid (darker) over the trace area, in points (the
    same on every page: formatted once)."""
    bottom, top = GRID_BOTTOM_MM, grid_top_mm()
    parts = []
    for step, width, grey in ((1.0, 0.2, "1 0.85 0.85"), (5.0, 0.5, "0.95 0.6 0.6")):
        lines = []
        for x in np.arange(left_mm, left_mm + width_mm + 1e-6, step):
            lines.append(f"{x * mm:.2f} {bottom * mm:.2f} m {x * mm:.2f} {top * mm:.2f} l")
        for y in np.arange(bottom, top + 1e-6, step):
            lines.append(
                f"{left_mm * mm:.2f} {y * mm:.2f} m {(left_mm + width_mm) * mm:.2f} {y * mm:.2f} l"
            )
        parts.append(f"{grey} RG {width} w " + " ".join(lines) + " S")
    return "q " + " ".join(parts) + " Q"


PAIR_PITCH = round(2 * SPEED_MM_PER_S / SAMPLING_HZ / 0.01)
"""Trace units (0.01 mm) between two drawn points (one per pair of samples): 10."""


def drawn_segments(
    signal_uv: np.ndarray, trace_left_mm: float
) -> list[tuple[float, int, np.ndarray]]:
    """(left edge in mm, row, points) of the rhythm strip (row 3) and each 2.5 s lead segment
    (rows 0-2, :data:`COLUMNS`): each less its median, so that it sits on its row's line
    whatever its offset, one point per pair of samples (:func:`_peaks`), in trace units (µV,
    rounded). The page and the console's trace draw these."""
    column = round(COLUMN_S * SAMPLING_HZ)
    rhythm = signal_uv[:, LEADS.index(RHYTHM_LEAD)][np.newaxis]
    columns = np.stack(
        [
            signal_uv[index * column : (index + 1) * column, LEADS.index(name)]
            for index, names in enumerate(COLUMNS)
            for name in names
        ]
    )
    rhythm_points, column_points = (
        np.rint(_peaks(values - np.median(values, axis=1, keepdims=True))).astype(np.int64)
        for values in (rhythm, columns)
    )
    laid_out = [(trace_left_mm, 3, rhythm_points[0])]
    for index, names in enumerate(COLUMNS):
        left = trace_left_mm + index * COLUMN_S * SPEED_MM_PER_S
        points = column_points[index * len(names) : (index + 1) * len(names)]
        laid_out += [(left, row, points[row]) for row in range(len(names))]
    return laid_out


FIELD = 6
"""Characters of each trace value in the page's operators, right-aligned: -99,999 to 99,999
µV (a metre above or below its row); values beyond are drawn at those bounds."""
_FIELD_LIMIT = 10 ** (FIELD - 1) - 1


@lru_cache(maxsize=1)
def _field_texts() -> np.ndarray:
    """(values, FIELD) ASCII: each value from -_FIELD_LIMIT up, as ``%6d`` writes it."""
    numbers = range(-_FIELD_LIMIT, _FIELD_LIMIT + 1)
    text = "".join(f"{value:{FIELD}d}" for value in numbers).encode("ascii")
    return np.frombuffer(text, dtype=np.uint8).reshape(-1, FIELD)


@dataclass(frozen=True)
class NumberTemplate:
    """Text with a field of :data:`FIELD` characters for an integer wherever ``%d`` stood:
    filled by indexing, in one vectorised pass (``%`` formatting 10,000 numbers one by one
    costs 0.7 ms a page; the spaces cost 13 % more bytes after compression)."""

    text: np.ndarray  # ASCII (uint8), the fields blank
    fields: np.ndarray  # (slots, FIELD): where each field's characters are in ``text``

    @classmethod
    def of(cls, template: str) -> NumberTemplate:
        pieces = template.split("%d")
        text = (" " * FIELD).join(pieces).encode("ascii")
        ends = np.cumsum([len(piece) for piece in pieces[:-1]], dtype=np.int64)
        starts = ends + FIELD * np.arange(ends.size)
        fields = starts[:, np.newaxis] + np.arange(FIELD)
        return cls(np.frombuffer(text, dtype=np.uint8), fields)

    def fill(self, values: np.ndarray) -> str:
        """The text with ``values`` in its fields (right-aligned, clipped to a field)."""
        if values.shape != self.fields.shape[:1]:
            raise ValueError(f"{values.size} values for {len(self.fields)} fields")
        filled = self.text.copy()
        filled[self.fields] = _field_texts()[
            np.clip(values, -_FIELD_LIMIT, _FIELD_LIMIT) + _FIELD_LIMIT
        ]
        return filled.tobytes().decode("ascii")


@lru_cache(maxsize=4)
def _traces_template(
    pulse_left_mm: float, layout: tuple[tuple[float, int, int], ...]
) -> NumberTemplate:
    """The trace layer's operators for segments at ``layout`` ((left mm, row, points) each),
    with a slot for each point: a calibration pulse per row, then each segment drawn from
    its own origin, so that its numbers stay short."""
    paths = [(pulse_left_mm, row, _PULSE) for row in range(4)]
    paths += [(left, row, _polyline(points, PAIR_PITCH)) for left, row, points in layout]
    width = 0.6 / UNIT  # 0.6 pt
    drawn = (
        f"q {UNIT:.6f} 0 0 {UNIT:.6f} {x * mm:.2f} {row_baseline_mm(row) * mm:.2f} cm {p}S Q"
        for x, row, p in paths
    )
    return NumberTemplate.of(f"q 0 0 0 RG {width:.1f} w 1 j " + " ".join(drawn) + " Q")


def label_positions(trace_left_mm: float) -> list[tuple[str, float, float]]:
    """(lead, x, y) in mm for each segment's label."""
    labels = []
    for row in range(3):
        for index, names in enumerate(COLUMNS):
            x = trace_left_mm + index * COLUMN_S * SPEED_MM_PER_S + 1.0
            labels.append((names[row], x, row_baseline_mm(row) + 8.0))
    labels.append((RHYTHM_LEAD, trace_left_mm + 1.0, row_baseline_mm(3) + 8.0))
    return labels


def _name(value: str) -> str:
    """A Patient's Name as "Family, Given" (or as it is, when it has no such parts)."""
    name = PersonName(value)
    text = ", ".join(part for part in (name.family_name, name.given_name) if part)
    return text or value.split("=")[0].replace("^", " ").strip() or "-"


def _date(keyword: str, header: Dataset) -> str:
    day = date_of(clean_value(keyword, header.get(keyword)))
    return day.isoformat() if day else ""


def _time(keyword: str, header: Dataset) -> str:
    value = clean_value(keyword, header.get(keyword)) or ""
    return ":".join(value[i : i + 2] for i in range(0, min(len(value), 6), 2))


def header_fields(header: Dataset) -> list[tuple[str, str]]:
    """(label, value) pairs of the page header, from the ECG's cleaned attributes."""
    copied = copied_attributes(header)
    sex = {"M": "male", "F": "female", "O": "other"}.get(copied.get("PatientSex", ""), "-")
    birth = _date("PatientBirthDate", header)
    age = copied.get("PatientAge", "")
    acquired = " ".join(
        part
        for part in (
            _date("AcquisitionDate", header)
            or _date("ContentDate", header)
            or _date("StudyDate", header),
            _time("AcquisitionTime", header)
            or _time("ContentTime", header)
            or _time("StudyTime", header),
        )
        if part
    )
    return [
        ("Patient", _name(copied.get("PatientName") or "")),
        ("ID", copied.get("PatientID") or "-"),
        ("Sex", sex),
        ("Born" if birth else "Age", birth or age.lstrip("0") or "-"),
        ("Acquired", acquired or "-"),
        ("Institution", clean_value("InstitutionName", header.get("InstitutionName")) or "-"),
    ]


def result_lines(result: PageResult, algorithm: AlgorithmDescription) -> list[str]:
    """The result box's lines, in reading order."""

    def years(value: float | None, signed: bool = False) -> str:
        if value is None:
            return "not known (the ECG carries no age or birth date)"
        return f"{value:+.1f} years" if signed else f"{value:.1f} years"

    lines = [
        f"ECG-predicted age: {years(result.predicted_age_years)}",
        f"Chronological age: {years(result.chronological_age_years)}",
        f"Age gap (predicted - chronological): {years(result.age_gap_years, signed=True)}",
    ]
    if algorithm.gap_correction is not None and result.age_gap_corrected_years is not None:
        lines.append(
            f"Age gap corrected for age: {years(result.age_gap_corrected_years, signed=True)}"
            f" ({algorithm.gap_correction.method} correction fitted on"
            f" {algorithm.gap_correction.fitted_on})"
        )
    return [
        *lines,
        f"Model: {algorithm.name} {algorithm.version}. Intended use: {algorithm.intended_use}",
        f"Signal quality flags: {quality_text(result.quality_flags)}",
    ]


@dataclass(frozen=True)
class PageText:
    """One line of text on the page: font, size, where it starts (or, right-aligned, ends)
    in points, and its words."""

    font: str
    size: float
    x: float
    y: float
    text: str
    right_aligned: bool = False
    red: bool = False


def page_texts(
    header: Dataset,
    leads_derived: Sequence[str],
    result: PageResult,
    algorithm: AlgorithmDescription,
    paper: str = "A4",
) -> list[PageText]:
    """Every text on the page, in drawing order: lead labels, header, scale, result box,
    "Not for clinical use" when it applies, and the footer."""
    width, height = PAPER[paper]
    texts = [
        PageText(_BOLD, 9, x * mm, y * mm, lead + ("*" if lead in leads_derived else ""))
        for lead, x, y in label_positions(MARGIN_MM + PULSE_MM)
    ]
    top = height / mm - MARGIN_MM
    x = MARGIN_MM
    for label, value in header_fields(header):
        texts.append(PageText(_FONT, 8, x * mm, (top - 4) * mm, label))
        texts.append(PageText(_value_font(value), 10, x * mm, (top - 9) * mm, value[:48]))
        x += 45.0
    scale = "25 mm/s, 10 mm/mV, calibration 1 mV"
    derived = "; * derived from I and II" if leads_derived else ""
    texts.append(PageText(_FONT, 7, MARGIN_MM * mm, (GRID_BOTTOM_MM - 4) * mm, scale + derived))
    line_y = GRID_BOTTOM_MM - 11
    for line in result_lines(result, algorithm):
        texts.append(PageText(_FONT, 9, MARGIN_MM * mm, line_y * mm, line[:150]))
        line_y -= 5.5
    if not algorithm.validated_for_clinical_use:
        right = (width / mm - MARGIN_MM) * mm
        warning = "Not for clinical use"
        texts.append(PageText(_BOLD, 14, right, (GRID_BOTTOM_MM - 12) * mm, warning, True, True))
    footer = f"ecg2age-dicom {__version__}; ECG {header.get('SOPInstanceUID', '')}"
    texts.append(PageText(_FONT, 6, MARGIN_MM * mm, (MARGIN_MM - 4) * mm, footer))
    return texts


def page_title(algorithm: AlgorithmDescription) -> str:
    """The PDF's document title."""
    return f"ECG age report - {algorithm.name} {algorithm.version}"


def trace_layer(signal_uv: np.ndarray) -> str:
    """The page's traces (PDF path operators): every lead segment and the rhythm strip
    (:func:`drawn_segments`), with a calibration pulse per row, the layer's numbers written
    in one pass."""
    laid_out = drawn_segments(signal_uv, MARGIN_MM + PULSE_MM)
    layout = tuple((left, row, points.size) for left, row, points in laid_out)
    points = np.concatenate([points for _, _, points in laid_out])
    return _traces_template(MARGIN_MM + 1.0, layout).fill(points)


def draw_page(
    texts: Sequence[PageText],
    traces: str,
    title: str,
    paper: str = "A4",
    flate: pdfdoc.PDFStreamFilterZCompress | None = None,
) -> bytes:
    """The page drawn by ReportLab: the grid, ``traces`` (:func:`trace_layer`) and
    ``texts`` (:func:`page_texts`), its streams compressed by ``flate`` (:class:`FastFlate`
    unless given)."""
    _setup()
    width, height = PAPER[paper]
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=(width, height), pageCompression=0, invariant=1)
    # ReportLab's hook for the filters of every stream it does not compress itself
    canvas._doc.defaultStreamFilters = [flate or FastFlate()]
    canvas.setTitle(title)
    canvas.setCreator(f"ecg2age-dicom {__version__}")
    canvas.addLiteral(_grid(MARGIN_MM, PULSE_MM + GRID_WIDTH_MM))
    canvas.addLiteral(traces)
    red = False
    for text in texts:
        if text.red != red:
            red = text.red
            canvas.setFillColorRGB(0.75 if red else 0, 0, 0)
        canvas.setFont(text.font, text.size)
        draw = canvas.drawRightString if text.right_aligned else canvas.drawString
        draw(text.x, text.y, text.text)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()
