"""What reaches the log: format, levels, and the filter every line passes through.

The same in the command and in the service's worker processes. Lines carry UIDs, statuses and
reasons, never patient names, IDs or birth dates:

- every message has its control characters escaped (``\\n`` -> ``\\\\n``), so a value from
  the network cannot forge a line;
- messages from third-party libraries (pydicom, highdicom, pynetdicom, Python warnings) have
  every quoted or bracketed value replaced by ``<redacted>``: their warnings quote the value
  they complain about, which may be a patient's name or birth date;
- pydicom's own value warnings are switched off (``reading_validation_mode = IGNORE``): the
  values that matter are validated by this project (``identity``, ``waveform``, ``sr``), and
  pynetdicom does not log the identifiers of its requests and responses.
"""

from __future__ import annotations

import logging
import re

import pydicom.config
from pynetdicom import _config as pynetdicom_config

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Libraries whose per-message INFO lines drown ours; their warnings are kept.
CHATTY_LIBRARIES = ("apscheduler", "highdicom", "pynetdicom", "alembic")
THIRD_PARTY = ("pydicom", "highdicom", "pynetdicom", "py.warnings")
# "job skipped: maximum number of running instances reached" is the expected outcome of
# waking the delivery job while it is sending.
QUIET_LOGGERS = {"apscheduler.executors.default": logging.ERROR}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]")


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x00``)."""
    return _CONTROL.sub(lambda match: ascii(match.group())[1:-1], text)


def redact_values(text: str) -> str:
    """``text`` with every quoted or bracketed value replaced by ``<redacted>``."""
    return _QUOTED.sub("<redacted>", text)


class SafeLineFilter(logging.Filter):
    """Escapes control characters in every message and redacts third-party values."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name.startswith(THIRD_PARTY):
            message = redact_values(message)
        if _CONTROL.search(message):
            message = escape_controls(message)
        record.msg, record.args = message, None
        return True


def configure(level: int, prefix: str = "") -> None:
    """Log to stderr at ``level``; ``prefix`` goes before each message (a worker's number)."""
    logging.basicConfig(level=level, format=FORMAT.replace("%(message)s", prefix + "%(message)s"))
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SafeLineFilter) for f in handler.filters):
            handler.addFilter(SafeLineFilter())
    logging.captureWarnings(True)  # Python warnings become records, and pass the filter
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    if level > logging.DEBUG:
        for name in CHATTY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
        for name, quiet in QUIET_LOGGERS.items():
            logging.getLogger(name).setLevel(quiet)
