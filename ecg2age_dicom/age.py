"""Chronological age from the ECG's patient and study attributes (pure, no I/O)."""

from __future__ import annotations

import re
from datetime import date

from pydicom.dataset import Dataset

_AGE_STRING = re.compile(r"^(\d{3})([DWMY])$")
_DAYS_PER = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}
# Dates that say when the ECG was recorded, best first.
_REFERENCE_DATES = ("AcquisitionDateTime", "AcquisitionDate", "ContentDate", "StudyDate")


def _date(value: object) -> date | None:
    text = str(value or "").strip()[:8]
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def chronological_age(ds: Dataset) -> float | None:
    """Age in years at the recording: Patient's Age (AS, e.g. "051Y"), else Patient's Birth
    Date with the acquisition / content / study date. None when neither is usable."""
    match = _AGE_STRING.match(str(ds.get("PatientAge", "") or "").strip())
    if match:
        return int(match.group(1)) * _DAYS_PER[match.group(2)] / 365.25
    birth = _date(ds.get("PatientBirthDate"))
    if birth is None:
        return None
    for keyword in _REFERENCE_DATES:
        recorded = _date(ds.get(keyword))
        if recorded is not None and recorded >= birth:
            return (recorded - birth).days / 365.25
    return None
