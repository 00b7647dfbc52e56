"""Chronological age from the ECG's patient and study attributes, and the age gap corrected
for age (pure, no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
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


METHODS = {"linear": 1, "quadratic": 2}  # correction method -> degree of the age polynomial


@dataclass(frozen=True)
class GapCorrection:
    """The correction of the age gap for age. A model's predictions regress to the mean: the
    gap (predicted - chronological) falls with age by construction. Fitted on validation
    data, the gap's expected value is a polynomial in age: linear (de Lange & Cole 2020) or
    with an age-squared term (Smith et al. 2019); the corrected gap is what it leaves:
    gap - (c0 + c1 x age [+ c2 x age^2]). ``coefficients`` are c0, c1[, c2]."""

    method: str
    coefficients: tuple[float, ...]
    fitted_on: str

    def corrected_gap(self, predicted_years: float, chronological_years: float) -> float:
        expected = sum(c * chronological_years**k for k, c in enumerate(self.coefficients))
        return predicted_years - chronological_years - expected

    @property
    def description(self) -> str:
        """One line for the SR: the method, its coefficients, its data."""
        terms = ["", " x age", " x age^2"]
        fitted = " + ".join(f"{c:.6g}{terms[k]}" for k, c in enumerate(self.coefficients))
        source = "Smith et al. 2019" if self.method == "quadratic" else "de Lange & Cole 2020"
        return f"{self.method} ({source}): gap - ({fitted}), fitted on {self.fitted_on}"


def fit_gap_correction(
    predicted_years: np.ndarray, chronological_years: np.ndarray, method: str, fitted_on: str
) -> GapCorrection:
    """The least-squares polynomial of ``method``'s degree of the gap on chronological age
    over validation ECGs."""
    ages = np.asarray(chronological_years, dtype=np.float64)
    gaps = np.asarray(predicted_years, dtype=np.float64) - ages
    highest_first = np.polyfit(ages, gaps, METHODS[method])
    coefficients = tuple(float(f"{c:.6g}") for c in highest_first[::-1])
    return GapCorrection(method, coefficients, fitted_on)
