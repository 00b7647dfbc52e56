"""Strings from a peer's dataset, cleaned to their Value Representation before they are copied.

A report copies the ECG's patient and study attributes. What carts write is not always valid
(Study Description ``"ECG:Sinus Rhythm\\r\\nNormal ECG\\r\\n"``, Patient's Birth Date
``"1970-01-01"``), and a report must be valid whatever the sender. The rule, per VR:

====================  ===========================================================================
VR                    cleaning
====================  ===========================================================================
LO, SH, CS, PN        control characters and backslashes become spaces, runs of spaces one,
                      ends trimmed; then cut to the VR's length (64, 16, 16; PN: 64 per group)
LT, ST                control characters other than CR, LF, FF, TAB become spaces; cut to
                      10240 / 1024 characters
DA                    ``YYYYMMDD`` of a real date; ``YYYY-MM-DD`` and ``YYYY.MM.DD`` (old
                      writers) are rewritten as ``YYYYMMDD``
TM, AS                kept only when valid (``HH[MM[SS[.FFFFFF]]]``, ``nnnD/W/M/Y``)
====================  ===========================================================================

Patient's Sex keeps only its defined terms (M, F, O). A value that is still invalid, or that
holds several values where one is allowed, is left out
(:func:`clean_value` returns None): a type 2 attribute is then written empty, a type 3 one not
at all. Characters of any script are kept; reports are written in ISO_IR 192 (UTF-8).
"""

from __future__ import annotations

import re
from datetime import date

import pydicom.config
from pydicom.datadict import dictionary_VR
from pydicom.multival import MultiValue
from pydicom.valuerep import validate_value

_MAX_LENGTH = {"LO": 64, "SH": 16, "CS": 16, "PN": 64, "LT": 10240, "ST": 1024}
_CONTROL_OR_BACKSLASH = re.compile(r"[\x00-\x1f\x7f\\]+")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]+")
_SPACES = re.compile(r" {2,}")
_DATE = re.compile(r"(\d{4})[-.]?(\d{2})[-.]?(\d{2})")
_TIME = re.compile(r"([01]\d|2[0-3])([0-5]\d([0-5]\d(\.\d{1,6})?)?)?")
_AGE = re.compile(r"\d{3}[DWMY]")
_DEFINED_TERMS = {"PatientSex": frozenset({"M", "F", "O"})}


def date_of(value: object) -> date | None:
    """A DA value (or an old ``YYYY-MM-DD`` one) as a date; None if it is not a real date."""
    match = _DATE.fullmatch(str(value or "").strip())
    if not match:
        return None
    try:
        return date(*(int(part) for part in match.groups()))
    except ValueError:
        return None


def _line(text: str, vr: str) -> str:
    text = _SPACES.sub(" ", _CONTROL_OR_BACKSLASH.sub(" ", text)).strip()
    if vr == "PN":
        return "=".join(group[: _MAX_LENGTH["PN"]].rstrip() for group in text.split("="))
    return text[: _MAX_LENGTH[vr]].rstrip()


def clean_value(keyword: str, value: object) -> str | None:
    """``value`` of the attribute ``keyword`` cleaned to its VR (module docstring), or None."""
    if value is None or isinstance(value, MultiValue | list | tuple | bytes):
        return None
    vr, text = dictionary_VR(keyword), str(value)
    if vr in ("LO", "SH", "CS", "PN"):
        text = _line(text, vr)
        if vr == "CS":
            text = text.upper()
    elif vr in ("LT", "ST"):
        text = _CONTROL_IN_TEXT.sub(" ", text)[: _MAX_LENGTH[vr]].rstrip()
    elif vr == "DA":
        day = date_of(text)
        text = day.strftime("%Y%m%d") if day else ""
    elif vr == "TM":
        text = text.strip() if _TIME.fullmatch(text.strip()) else ""
    elif vr == "AS":
        text = text.strip() if _AGE.fullmatch(text.strip()) else ""
    else:
        return None  # not a VR whose copy this module knows how to check
    if not text or text not in _DEFINED_TERMS.get(keyword, {text}):
        return None
    try:
        validate_value(vr, text, pydicom.config.RAISE)
    except ValueError:
        return None
    return text
