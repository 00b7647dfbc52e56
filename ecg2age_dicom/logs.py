"""Log format and levels, the same in the command and in the service's worker processes.

Lines carry UIDs, statuses and reasons, never patient names, IDs or birth dates.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Libraries whose per-message INFO lines drown ours (and highdicom's name the patient's
# dataset); their warnings are kept.
CHATTY_LIBRARIES = ("apscheduler", "highdicom", "pynetdicom", "alembic")


def configure(level: int, prefix: str = "") -> None:
    """Log to stderr at ``level``; ``prefix`` goes before each message (a worker's number)."""
    logging.basicConfig(level=level, format=FORMAT.replace("%(message)s", prefix + "%(message)s"))
    if level > logging.DEBUG:
        for name in CHATTY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
