"""Chronological age from Patient's Age, or Birth Date and the recording's date."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from ecg2age_dicom.age import GapCorrection, chronological_age, fit_gap_correction


def header(**values: str) -> Dataset:
    dataset = Dataset()
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    return dataset


@pytest.mark.parametrize(
    ("values", "years"),
    [
        ({"PatientAge": "051Y"}, 51.0),
        ({"PatientAge": "006M"}, 0.5),
        ({"PatientAge": "052W"}, 52 * 7 / 365.25),
        (
            {"PatientAge": "010D", "PatientBirthDate": "19000101", "StudyDate": "20000101"},
            10 / 365.25,
        ),
        ({"PatientBirthDate": "19700101", "AcquisitionDateTime": "20200101083000"}, 18262 / 365.25),
        ({"PatientBirthDate": "19700101", "StudyDate": "20200101"}, 18262 / 365.25),
        ({"PatientBirthDate": "1970-01-01", "ContentDate": "20200101"}, 18262 / 365.25),
    ],
)
def test_age_from_the_best_attribute(values, years):
    assert chronological_age(header(**values)) == pytest.approx(years)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"PatientAge": "51"},
        {"PatientAge": "51Y"},
        {"PatientBirthDate": "19700101"},  # no date of the recording
        {"PatientBirthDate": "19701301", "StudyDate": "20200101"},  # month 13
        {"PatientBirthDate": "20300101", "StudyDate": "20200101"},  # born after the ECG
        {"PatientBirthDate": "garbage", "StudyDate": "20200101"},
    ],
)
def test_no_age_when_the_attributes_do_not_give_one(values):
    assert chronological_age(header(**values)) is None


@pytest.mark.parametrize(
    ("method", "truth"), [("linear", (20.0, -0.3)), ("quadratic", (5.0, 0.3, -0.005))]
)
def test_the_fitted_correction_removes_the_gaps_dependence_on_age(method, truth):
    rng = np.random.default_rng(0)
    ages = rng.uniform(18, 90, 5000)
    regressed = sum(c * ages**k for k, c in enumerate(truth))  # the gap a model makes
    predicted = ages + regressed + rng.normal(0, 5, ages.size)
    correction = fit_gap_correction(predicted, ages, method, "synthetic")
    np.testing.assert_allclose(correction.coefficients, truth, rtol=0.05, atol=0.3)
    corrected = np.array(
        [correction.corrected_gap(p, a) for p, a in zip(predicted, ages, strict=True)]
    )
    assert abs(np.corrcoef(predicted - ages, ages)[0, 1]) > 0.3
    assert abs(np.corrcoef(corrected, ages)[0, 1]) < 0.02


def test_the_corrected_gap_is_the_gap_less_its_expected_value_at_that_age():
    correction = GapCorrection("linear", (20.0, -0.5), "x")
    assert correction.corrected_gap(70.0, 60.0) == pytest.approx(10.0 - (20.0 - 30.0))
    assert correction.description == (
        "linear (de Lange & Cole 2020): gap - (20 + -0.5 x age), fitted on x"
    )
