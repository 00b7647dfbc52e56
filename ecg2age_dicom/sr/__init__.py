"""The ECG-age Structured Report: built by highdicom (:mod:`.report`), encoded fast per ECG
(:mod:`.template`), with its codes in one place (:mod:`.codes`)."""

from ecg2age_dicom.sr import codes
from ecg2age_dicom.sr.report import (
    CHARACTER_SET,
    AlgorithmDescription,
    SRClass,
    build_report_with_highdicom,
    copied_attributes,
    evidence_header,
    series_uid_for,
)
from ecg2age_dicom.sr.template import Report, build_report, prepare

__all__ = [
    "CHARACTER_SET",
    "AlgorithmDescription",
    "Report",
    "SRClass",
    "build_report",
    "build_report_with_highdicom",
    "codes",
    "copied_attributes",
    "evidence_header",
    "prepare",
    "series_uid_for",
]
