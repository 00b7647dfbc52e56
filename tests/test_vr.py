"""Copied strings cleaned to their VR (``ecg2age_dicom.vr``)."""

from __future__ import annotations

import pytest
from pydicom.multival import MultiValue

from ecg2age_dicom.vr import clean_value, date_of


@pytest.mark.parametrize(
    ("keyword", "value", "cleaned"),
    [
        ("StudyDescription", "ECG:Sinus Rhythm\r\nNormal ECG\r\n", "ECG:Sinus Rhythm Normal ECG"),
        ("StudyDescription", "a\\b", "a b"),
        ("StudyDescription", "x" * 70, "x" * 64),
        ("AccessionNumber", "A" * 20, "A" * 16),
        ("PatientName", "Müller^Jürgen", "Müller^Jürgen"),
        (
            "PatientName",
            "Yamada^Tarou=山田^太郎=やまだ^たろう",
            "Yamada^Tarou=山田^太郎=やまだ^たろう",
        ),
        ("PatientName", "Doe^John\n", "Doe^John"),
        ("PatientBirthDate", "19700101", "19700101"),
        ("PatientBirthDate", "1970-01-01", "19700101"),
        ("PatientBirthDate", "1970.01.01", "19700101"),
        ("PatientBirthDate", "19700230", None),
        ("PatientBirthDate", "01/01/1970", None),
        ("StudyTime", "083000.123", "083000.123"),
        ("StudyTime", "25:61", None),
        ("PatientAge", "051Y", "051Y"),
        ("PatientAge", "51 years", None),
        ("PatientSex", "f", "F"),
        ("PatientSex", "male", None),
        ("StudyDescription", "", None),
        ("StudyDescription", None, None),
        ("StudyDescription", MultiValue(str, ["a", "b"]), None),
    ],
)
def test_values_are_cleaned_or_left_out(keyword, value, cleaned):
    assert clean_value(keyword, value) == cleaned


def test_dates_are_real_dates():
    assert date_of("20240229").isoformat() == "2024-02-29"
    assert date_of("20230229") is None and date_of(None) is None and date_of("2024") is None
