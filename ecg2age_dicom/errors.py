"""The exception hierarchy: each error carries a reason a PACS administrator can act on."""

from __future__ import annotations


class Ecg2AgeError(Exception):
    """Base class of every error raised on purpose by ecg2age-dicom."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidECG(Ecg2AgeError):
    """The object cannot be decoded as a resting 12-lead ECG."""


class InvalidIdentity(InvalidECG):
    """The object's SOP class or one of its UIDs is missing, invalid or not what was announced:
    it cannot be named in the spool, the database or a report, so it is not stored at all."""


class ConfigError(Ecg2AgeError):
    """The configuration file or environment holds an unknown key or a bad value."""


class ModelError(Ecg2AgeError):
    """A model card, model file or prediction is unusable."""
