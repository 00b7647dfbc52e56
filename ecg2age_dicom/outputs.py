"""The report objects made for one scored ECG, by kind (``[report] outputs``).

======  ====================================================================================
kind    object
======  ====================================================================================
sr      TID 1500 Structured Report (:func:`~ecg2age_dicom.sr.build_report`)
pdf     Encapsulated PDF of the one-page report (:mod:`ecg2age_dicom.pdf`)
sc      Secondary Capture image of that page (:mod:`ecg2age_dicom.pdf.capture`), optional
======  ====================================================================================

:func:`build_outputs` is pure: each object encoded, with its SOP Instance UID; the PDF and the
image show the same page, drawn once. :func:`prepare` makes their templates ahead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ecg2age_dicom import pdf, sr
from ecg2age_dicom.pdf import document, template
from ecg2age_dicom.scoring import Scorable, Score

KINDS = ("sr", "pdf", "sc")


@dataclass(frozen=True)
class Output:
    """One report object: its kind, SOP Instance UID and Part 10 bytes."""

    kind: str
    sop_instance_uid: str
    encoded: bytes


def prepare(
    algorithm: sr.AlgorithmDescription,
    kinds: Sequence[str],
    *,
    sr_class: sr.SRClass = sr.SRClass.COMPREHENSIVE,
    paper: str = "A4",
) -> None:
    """Make the templates of ``kinds`` now, not on the first ECG (about a second for the
    SR's, 0.1 s for the page's)."""
    if "sr" in kinds:
        sr.prepare(algorithm, sr_class)
    if {"pdf", "sc"} & set(kinds):
        template.prepare(algorithm, paper)
    if "pdf" in kinds:
        document.prepare(algorithm)


def build_outputs(
    item: Scorable,
    score: Score,
    algorithm: sr.AlgorithmDescription,
    kinds: Sequence[str],
    *,
    sr_class: sr.SRClass = sr.SRClass.COMPREHENSIVE,
    paper: str = "A4",
) -> list[Output]:
    """Every object of ``kinds`` for one scored ECG, in that order."""
    page = b""
    if {"pdf", "sc"} & set(kinds):
        result = pdf.PageResult(
            score.predicted_age_years,
            score.chronological_age_years,
            score.age_gap_years,
            item.quality.flags,
            score.age_gap_corrected_years,
        )
        page = pdf.render_page(
            item.header, item.standard_signal, item.ecg.leads_derived, result, algorithm, paper
        )
    made = []
    for kind in kinds:
        if kind == "sr":
            report = sr.build_report(
                item.header,
                algorithm,
                score.predicted_age_years,
                score.chronological_age_years,
                quality_flags=item.quality.flags,
                sr_class=sr_class,
            )
            made.append(Output(kind, report.sop_instance_uid, report.encoded))
        elif kind == "pdf":
            made.append(Output(kind, *pdf.build_pdf_document(item.header, page, algorithm)))
        elif kind == "sc":
            made.append(Output(kind, *pdf.build_capture(item.header, page, algorithm)))
        else:
            raise ValueError(f"unknown report output {kind!r}")
    return made
