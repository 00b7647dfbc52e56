"""Chronological age from the ECG's patient and study attributes (pure, no I/O)."""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

from ecg2age_dicom.vr import date_of

_AGE_STRING = re.compile(r"(\d{3})([DWMY])")
_DAYS_PER = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}
# Dates that say when the ECG was recorded, best first (a DT's first 8 characters are a DA).
_REFERENCE_DATES = ("AcquisitionDateTime", "AcquisitionDate", "ContentDate", "StudyDate")


def chronological_age(ds: Dataset) -> float | None:
    """Age in years at the recording: Patient's Age (AS, e.g. "051Y"), else Patient's Birth
    Date (``YYYYMMDD``, or ``YYYY-MM-DD`` as some carts write it) with the acquisition /
    content / study date. None when neither is usable, or the birth date is after the
    recording."""
    match = _AGE_STRING.fullmatch(str(ds.get("PatientAge", "") or "").strip())
    if match:
        return int(match.group(1)) * _DAYS_PER[match.group(2)] / 365.25
    birth = date_of(ds.get("PatientBirthDate"))
    if birth is None:
        return None
    for keyword in _REFERENCE_DATES:
        value = str(ds.get(keyword, "") or "").strip()
        recorded = date_of(value[:8] if keyword.endswith("DateTime") else value)
        if recorded is not None and recorded >= birth:
            return (recorded - birth).days / 365.25
    return None
