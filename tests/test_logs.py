"""Log lines: control characters escaped, third-party values redacted, pydicom quiet."""

from __future__ import annotations

import io
import logging
import warnings

import pydicom
import pytest
from pydicom.dataset import Dataset

from ecg2age_dicom import logs


@pytest.fixture
def captured():
    """The root logger as ``logs.configure`` sets it up, writing into a buffer."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, pydicom.config.settings.reading_validation_mode
    stream = io.StringIO()
    root.handlers = [logging.StreamHandler(stream)]
    root.setLevel(logging.INFO)
    logs.configure(logging.INFO)
    yield stream
    root.handlers, level, mode = saved
    root.setLevel(level)
    pydicom.config.settings.reading_validation_mode = mode
    logging.captureWarnings(False)


def test_a_value_with_a_newline_cannot_forge_a_line(captured):
    logging.getLogger("ecg2age_dicom.test").info("received sop_instance_uid=%s", "1.2\nERROR x")
    assert captured.getvalue().count("\n") == 1 and "1.2\\nERROR x" in captured.getvalue()


def test_third_party_messages_lose_their_quoted_values(captured):
    logging.getLogger("pydicom").warning("Invalid value for VR DA: '1970-01-01'.")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("person name 'Doe^Jane' is odd", UserWarning, stacklevel=1)
    text = captured.getvalue()
    assert "1970-01-01" not in text and "Doe^Jane" not in text
    assert "Invalid value for VR DA: <redacted>" in text and "person name <redacted>" in text


def test_pydicom_does_not_warn_about_a_bad_birth_date(captured):
    dataset = Dataset()
    dataset.PatientName = "Doe^Jane"
    with pydicom.config.disable_value_validation():
        dataset.PatientBirthDate = "1970-01-01"
    buffer = io.BytesIO()
    dataset.save_as(buffer, implicit_vr=True, little_endian=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read = pydicom.dcmread(io.BytesIO(buffer.getvalue()), force=True)
        assert read.PatientBirthDate == "1970-01-01"
    assert caught == [] and "1970" not in captured.getvalue()
