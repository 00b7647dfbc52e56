"""The UID rule and the SOP classes that are scored."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from ecg2age_dicom.errors import InvalidIdentity
from ecg2age_dicom.identity import SCORED_SOP_CLASSES, check_identity, is_valid_uid, shown


@pytest.mark.parametrize("uid", ["0", "1.2.3", "2.25.1234567890", "1." + "2" * 62])
def test_valid_uids(uid):
    assert is_valid_uid(uid)


@pytest.mark.parametrize(
    "uid",
    ["", "1..2", "1.02", ".1", "1.", "1.2.abc", "../x", "/tmp/x", "1.2\n", "1.2\x00", "1.2 ",
     "1." + "2" * 63, None, 12],
)  # fmt: skip
def test_invalid_uids(uid):
    assert not is_valid_uid(uid)


def ecg(**values: str) -> Dataset:
    dataset = Dataset()
    dataset.SOPClassUID = SCORED_SOP_CLASSES[0]
    dataset.SOPInstanceUID, dataset.StudyInstanceUID, dataset.SeriesInstanceUID = (
        "1.1",
        "1.2",
        "1.3",
    )
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    return dataset


def test_a_scored_ecg_has_its_identity():
    identity = check_identity(ecg())
    assert (identity.sop_instance_uid, identity.study_instance_uid) == ("1.1", "1.2")


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.104.1"}, "Encapsulated PDF Storage"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.9.2.1"}, "is not scored"),
        ({"SOPInstanceUID": ""}, "SOP Instance UID (0008,0018) is missing"),
        ({"StudyInstanceUID": "1.2.x"}, "Study Instance UID (0020,000D) '1.2.x'"),
    ],
)
def test_what_cannot_be_scored_is_named(values, named):
    with pytest.raises(InvalidIdentity) as caught:
        check_identity(ecg(**values))
    assert named in caught.value.reason


def test_shown_escapes_and_bounds_a_peers_value():
    assert shown("a\nb") == "'a\\nb'"
    assert len(shown("x" * 500)) == 70
