"""What an instance is: its SOP class and UIDs, checked before anything uses them.

Every identifier that reaches a spool file name, a database key, a log line or a report passes
:func:`check_identity` first:

- a UID is 1-64 characters of digits and dots, with no empty component and no component
  with a leading zero (PS3.5 9.1). pydicom's ``UID.is_valid`` matches with ``re.match`` and
  ``$``, which also accepts a trailing newline; :func:`is_valid_uid` matches the whole string.
- the SOP class is one of :data:`SCORED_SOP_CLASSES`, the one rule for which objects are
  scored: the listener negotiates only these, and ``predict`` and ``inspect`` refuse others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import (
    RE_VALID_UID,
    UID,
    AmbulatoryECGWaveformStorage,
    General32bitECGWaveformStorage,
    GeneralECGWaveformStorage,
    TwelveLeadECGWaveformStorage,
)

from ecg2age_dicom.errors import InvalidIdentity

SCORED_SOP_CLASSES: tuple[UID, ...] = (
    TwelveLeadECGWaveformStorage,
    GeneralECGWaveformStorage,
    AmbulatoryECGWaveformStorage,
    General32bitECGWaveformStorage,
)
"""The ECG waveform storage classes that are scored, everywhere (listener, predict, inspect)."""

MAX_UID_LENGTH = 64
_VALID_UID = re.compile(RE_VALID_UID.pattern.removeprefix("^").removesuffix("$"))


def is_valid_uid(value: object) -> bool:
    """True for a valid DICOM UID (the whole string: no padding, no control characters)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_LENGTH
        and _VALID_UID.fullmatch(value) is not None
    )


def shown(value: object, limit: int = 70) -> str:
    """A peer's value as it may appear in a reason or a log line: escaped, quoted, bounded."""
    text = ascii(str(value))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


@dataclass(frozen=True)
class Identity:
    """The four UIDs of an instance, each one valid."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


def check_uid(value: object, name: str) -> str:
    """``value`` as a UID string, or :class:`InvalidIdentity` naming the attribute."""
    if value is None or value == "":
        raise InvalidIdentity(f"{name} is missing or empty")
    text = str(value)
    if not is_valid_uid(text):
        raise InvalidIdentity(
            f"{name} {shown(text)} is not a valid UID (1-64 digits and dots, no empty or "
            "leading-zero component)"
        )
    return text


def check_identity(ds: Dataset) -> Identity:
    """The dataset's SOP class and UIDs, checked.

    Raises
    ------
    InvalidIdentity
        A UID is missing, empty or invalid, or the SOP class is not one that is scored.
    """
    sop_class = check_uid(ds.get("SOPClassUID"), "SOP Class UID (0008,0016)")
    if sop_class not in SCORED_SOP_CLASSES:
        raise InvalidIdentity(
            f"SOP class {sop_class} ({UID(sop_class).name}) is not scored: only the ECG "
            "waveform storage classes are (12-lead, General, Ambulatory, General 32-bit)"
        )
    return Identity(
        sop_class_uid=sop_class,
        sop_instance_uid=check_uid(ds.get("SOPInstanceUID"), "SOP Instance UID (0008,0018)"),
        study_instance_uid=check_uid(ds.get("StudyInstanceUID"), "Study Instance UID (0020,000D)"),
        series_instance_uid=check_uid(
            ds.get("SeriesInstanceUID"), "Series Instance UID (0020,000E)"
        ),
    )
