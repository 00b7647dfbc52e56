"""Chronological age from Patient's Age, or Birth Date and the recording's date."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from ecg2age_dicom.age import chronological_age


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
