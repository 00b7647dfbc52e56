"""The spool: the folders that hold received ECGs, quarantined ones and produced reports.

File names are built here and nowhere else, from UIDs only: :meth:`Spool.path_in` refuses a
value that is not a valid UID (:func:`~ecg2age_dicom.identity.is_valid_uid`: digits and dots,
so no separator, no ``..``, no absolute path), and, as a second line of defence, any name
whose normalised path would not be a direct child of its folder. ``incoming/`` holds the
files the listener is receiving (pynetdicom writes each incoming dataset there), one
sub-folder per host so that
hosts can share a spool; :meth:`Spool.tidy` at start-up removes what this host left there
(never acknowledged: the senders still hold those instances) and the temporary files of writes
that a killed process left behind.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ecg2age_dicom.identity import is_valid_uid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spool:
    """The spool's folders under ``root``."""

    root: Path

    @property
    def received(self) -> Path:
        return self.root / "received"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def reports(self) -> Path:
        return self.root / "sr"

    @property
    def incoming(self) -> Path:
        return self.root / "incoming" / socket.gethostname()

    def path_in(self, folder: Path, uid: str) -> Path:
        """``folder/UID.dcm``.

        Raises
        ------
        ValueError
            ``uid`` is not a valid UID, or the path would leave ``folder``.
        """
        if not is_valid_uid(uid):
            raise ValueError(f"refusing a spool file name from an invalid UID {uid!a}")
        path = folder / f"{uid}.dcm"
        if os.path.dirname(os.path.normpath(path)) != os.path.normpath(folder):
            raise ValueError(f"refusing spool path {path!a}: it is not inside {folder}")
        return path

    def received_path(self, sop_instance_uid: str) -> Path:
        return self.path_in(self.received, sop_instance_uid)

    def quarantine_path(self, sop_instance_uid: str) -> Path:
        return self.path_in(self.quarantine, sop_instance_uid)

    def report_path(self, sop_instance_uid: str) -> Path:
        """Where a report object (SR, PDF...) is kept until delivered."""
        return self.path_in(self.reports, sop_instance_uid)

    def tidy(self, stale_after_s: float = 3600.0) -> None:
        """Empty this host's ``incoming/`` and remove temporary files (``.*.tmp``) older than
        ``stale_after_s`` (a live write never takes that long; other hosts may be writing)."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        removed = [path for path in self.incoming.iterdir() if path.is_file()]
        cutoff = time.time() - stale_after_s
        for folder in (self.received, self.quarantine, self.reports):
            if folder.is_dir():
                removed += [p for p in folder.glob(".*.tmp") if p.stat().st_mtime < cutoff]
        for path in removed:
            path.unlink(missing_ok=True)
        if removed:
            log.info("spool tidied: removed %d unacknowledged or interrupted files", len(removed))
