"""The ECG-age Structured Report: built by highdicom (:mod:`.report`), encoded fast per ECG
(:mod:`.template`), with its codes in one place (:mod:`.codes`)."""

from ecg2age_dicom.sr import codes
from ecg2age_dicom.sr.report import (
    AlgorithmDescription,
    SRClass,
    build_report_with_highdicom,
    copied_attributes,
    series_uid_for,
)
from ecg2age_dicom.sr.template import Report, build_report, prepare

__all__ = [
    "AlgorithmDescription",
    "Report",
    "SRClass",
    "build_report",
    "build_report_with_highdicom",
    "codes",
    "copied_attributes",
    "prepare",
    "series_uid_for",
]
