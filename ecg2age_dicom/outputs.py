"""The report objects made for one scored ECG, by kind (``[report] outputs``).

======  ====================================================================================
kind    object
======  ====================================================================================
sr      TID 1500 Structured Report (:func:`~ecg2age_dicom.sr.build_report`)
pdf     Encapsulated PDF of the one-page report (:mod:`ecg2age_dicom.pdf`)
======  ====================================================================================

:func:`build_outputs` is pure: each object encoded, with its SOP Instance UID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ecg2age_dicom import pdf, sr
from ecg2age_dicom.scoring import Scorable, Score


@dataclass(frozen=True)
class Output:
    """One report object: its kind, SOP Instance UID and Part 10 bytes."""

    kind: str
    sop_instance_uid: str
    encoded: bytes


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
            result = pdf.PageResult(
                score.predicted_age_years,
                score.chronological_age_years,
                score.age_gap_years,
                item.quality.flags,
            )
            page = pdf.render_page(
                item.header, item.standard_signal, item.ecg.leads_derived, result, algorithm, paper
            )
            uid, encoded = pdf.build_pdf_document(item.header, page, algorithm)
            made.append(Output(kind, uid, encoded))
        else:
            raise ValueError(f"unknown report output {kind!r}")
    return made
