"""The listener's side: check what arrived from its header, spool it, record it, then answer.

One received instance, as a file pynetdicom wrote into the spool's ``incoming/`` folder, goes
through :meth:`Receiver.accept`:

=================================================  ===========  ===========================
what                                               outcome      status (the sender ...)
=================================================  ===========  ===========================
over ``max_instance_bytes``                        NOT_STORED   0xA700 (may retry later)
more sequence items than an ECG can hold, or       UNREADABLE   0xC000 (must not resend)
bytes pydicom cannot parse
SOP class not scored, a missing or invalid UID,    MISMATCH     0xA900 (must not resend)
or a dataset that differs from the command or
its presentation context
header not that of a usable resting ECG            INVALID      0xC000; kept in quarantine,
(:func:`~ecg2age_dicom.waveform.rhythm_group`)                  row ``failed`` with reason
already received (same SOP Instance UID)           DUPLICATE    0x0000
new and usable                                     STORED       0x0000
disk or database failure                           NOT_STORED   0xA700 (keeps its copy)
=================================================  ===========  ===========================

Only the header is checked here (the sample values are decoded once, by the worker). The file
is moved into ``received/`` (or ``quarantine/``) with fsync, and recorded in the database,
before the sender hears success. Nothing that fails a check reaches a file name or a row.
"""

from __future__ import annotations

import enum
import io
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom import metrics, waveform
from ecg2age_dicom.dicomfile import FILE_META_ELEMENTS_START, move_durably
from ecg2age_dicom.doorbell import Doorbell
from ecg2age_dicom.errors import InvalidECG, InvalidIdentity
from ecg2age_dicom.identity import Identity, check_identity, shown
from ecg2age_dicom.spool import Spool
from ecg2age_dicom.store import queries
from ecg2age_dicom.store.models import InstanceStatus
from ecg2age_dicom.vr import clean_value

log = logging.getLogger(__name__)

MAX_SEQUENCE_ITEMS = 5000
"""Sequence items an ECG may hold (groups, channels and their codes: a few hundred in real
files); more is refused before pydicom parses them (150,000 empty items take seconds)."""
_ITEM_TAGS = (b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00")  # (FFFE,E000) little / big endian


class ReceiveOutcome(enum.Enum):
    """What the listener answers for one received instance."""

    STORED = "stored"  # on disk and in the database: success
    DUPLICATE = "duplicate"  # already had it: success, nothing new
    INVALID = "invalid"  # kept in quarantine, row failed: "cannot understand"
    UNREADABLE = "unreadable"  # not a dataset that can be parsed: "cannot understand"
    MISMATCH = "mismatch"  # identity missing, invalid or not as announced: nothing stored
    NOT_STORED = "not_stored"  # too large, or disk / database failed: sender keeps its copy


@dataclass(frozen=True)
class Received:
    """The answer for one C-STORE, with a reason for the sender when it is a failure."""

    outcome: ReceiveOutcome
    reason: str = ""


@dataclass(frozen=True)
class StoreRequest:
    """What the C-STORE command and its association say about the instance."""

    sop_class_uid: str  # Affected SOP Class UID of the command
    sop_instance_uid: str  # Affected SOP Instance UID of the command
    context_sop_class_uid: str  # abstract syntax of the presentation context it came on
    transfer_syntax_uid: str  # of that context: how the dataset is encoded
    calling_ae_title: str
    peer: str


def parse(path: Path, transfer_syntax_uid: str, max_bytes: int) -> Dataset:
    """A received Part 10 file's dataset, after the checks that bound the work of parsing.

    Raises
    ------
    InvalidECG
        Deflated data that inflates beyond ``max_bytes``, more than
        :data:`MAX_SEQUENCE_ITEMS` sequence items, or bytes pydicom cannot parse.
    OSError
        The file cannot be read.
    """
    content = encoded = path.read_bytes()
    if transfer_syntax_uid == DeflatedExplicitVRLittleEndian:
        content = _inflated(path, encoded, max_bytes)
    # Undefined-length sequences are parsed item by item as they are read: count first.
    items = content.count(_ITEM_TAGS[transfer_syntax_uid == ExplicitVRBigEndian])
    if items > MAX_SEQUENCE_ITEMS:
        raise InvalidECG(
            f"the dataset holds {items} sequence items: more than {MAX_SEQUENCE_ITEMS} cannot "
            "be a resting ECG"
        )
    try:
        return pydicom.dcmread(io.BytesIO(encoded))
    except Exception as exc:  # pydicom raises many types on garbage
        raise InvalidECG(f"the dataset cannot be parsed ({type(exc).__name__})") from None


def _inflated(path: Path, encoded: bytes, max_bytes: int) -> bytes:
    """The inflated dataset of a Deflated Explicit VR file, refused beyond ``max_bytes``."""
    try:
        meta = read_file_meta_info(path)
        start = FILE_META_ELEMENTS_START + int(meta.FileMetaInformationGroupLength)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        content = inflater.decompress(encoded[start:], max_bytes + 1)
    except (InvalidDicomError, AttributeError, ValueError, TypeError, zlib.error) as exc:
        raise InvalidECG(f"the deflated dataset cannot be read ({type(exc).__name__})") from None
    if len(content) > max_bytes:
        raise InvalidECG(f"the deflated dataset inflates to more than {max_bytes} bytes")
    return content


class Receiver:
    """Checks, spools and records received instances, then says what to answer.

    Parameters
    ----------
    sessions:
        The database.
    spool:
        Where received and quarantined files go.
    max_bytes:
        ``[listener] max_instance_bytes``.
    doorbell:
        Rung when a new usable ECG is stored.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        spool: Spool,
        max_bytes: int,
        doorbell: Doorbell | None = None,
    ) -> None:
        self.sessions = sessions
        # One Core statement per ECG: the listener needs none of the ORM session's work.
        self.engine: Engine = sessions.kw["bind"]
        self.spool = spool
        self.max_bytes = max_bytes
        self.doorbell = doorbell or Doorbell()

    def accept(self, path: Path, request: StoreRequest) -> Received:
        """Check the file at ``path`` (on the spool's file system), spool it and record it.

        The file is moved into the spool when it is new; otherwise it is left where it is
        for the caller to remove. Each outcome is counted (``ecg2age_received_total``).
        """
        received = self._accept(path, request)
        metrics.received(received.outcome.value)
        return received

    def _accept(self, path: Path, request: StoreRequest) -> Received:
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                return self._refused(
                    ReceiveOutcome.NOT_STORED, f"instance over {self.max_bytes} bytes", request
                )
            dataset = parse(path, request.transfer_syntax_uid, self.max_bytes)
        except InvalidECG as exc:
            return self._refused(ReceiveOutcome.UNREADABLE, exc.reason, request)
        except OSError as exc:
            return self._refused(ReceiveOutcome.NOT_STORED, f"not read: {exc.strerror}", request)
        try:
            identity = _identity_as_announced(dataset, request)
        except InvalidIdentity as exc:
            return self._refused(ReceiveOutcome.MISMATCH, exc.reason, request)
        try:
            waveform.rhythm_group(dataset)
            problem = None
        except InvalidECG as exc:
            problem = exc.reason
        except Exception as exc:  # a malformed value pydicom cannot convert
            problem = f"the waveform header cannot be read ({type(exc).__name__})"
        return self._store(path, dataset, identity, request, problem)

    def _store(
        self,
        path: Path,
        dataset: Dataset,
        identity: Identity,
        request: StoreRequest,
        problem: str | None,
    ) -> Received:
        uid = identity.sop_instance_uid
        try:
            target = (self.spool.quarantine_path if problem else self.spool.received_path)(uid)
            with self.engine.begin() as connection:
                _, created = queries.record_received(
                    connection, _new_instance(dataset, identity, target, request, problem)
                )
                if created:  # on disk before the row commits, both before we answer
                    move_durably(path, target)
        except Exception as exc:  # disk full, database down...: the sender keeps its copy
            log.error("could not store sop_instance_uid=%s: %s: %s", uid, type(exc).__name__, exc)
            return Received(ReceiveOutcome.NOT_STORED, f"not stored: {type(exc).__name__}")
        calling = shown(request.calling_ae_title, 24)
        if not created:
            log.info("duplicate sop_instance_uid=%s calling_ae=%s", uid, calling)
            return Received(ReceiveOutcome.DUPLICATE)
        if problem:
            log.warning(
                "invalid ecg sop_instance_uid=%s calling_ae=%s reason=%s", uid, calling, problem
            )
            return Received(ReceiveOutcome.INVALID, problem)
        log.info("received sop_instance_uid=%s calling_ae=%s", uid, calling)
        self.doorbell.ring()
        return Received(ReceiveOutcome.STORED)

    @staticmethod
    def _refused(outcome: ReceiveOutcome, reason: str, request: StoreRequest) -> Received:
        log.warning(
            "refused %s: %s (announced sop_instance_uid=%s calling_ae=%s peer=%s)",
            outcome.value,
            reason,
            shown(request.sop_instance_uid),
            shown(request.calling_ae_title, 24),
            request.peer,
        )
        return Received(outcome, reason)


def _identity_as_announced(dataset: Dataset, request: StoreRequest) -> Identity:
    """The dataset's identity, which must be what the command and its context announced."""
    identity = check_identity(dataset)
    if not request.sop_class_uid == request.context_sop_class_uid == identity.sop_class_uid:
        raise InvalidIdentity(
            f"SOP class differs: dataset {identity.sop_class_uid}, command "
            f"{shown(request.sop_class_uid)}, presentation context "
            f"{shown(request.context_sop_class_uid)}"
        )
    if request.sop_instance_uid != identity.sop_instance_uid:
        raise InvalidIdentity(
            "SOP Instance UID in the dataset differs from the command's "
            f"({shown(request.sop_instance_uid)})"
        )
    return identity


def _searched_value(dataset: Dataset, keyword: str) -> str:
    """What the console searches by, cleaned to its VR; "" for a value pydicom cannot read (a
    sender's broken character set must not stop its ECG from being stored)."""
    try:
        return clean_value(keyword, dataset.get(keyword)) or ""
    except (ValueError, LookupError, TypeError):
        return ""


def _new_instance(
    dataset: Dataset, identity: Identity, path: Path, request: StoreRequest, problem: str | None
) -> queries.NewInstance:
    searched = {
        keyword: _searched_value(dataset, keyword)
        for keyword in ("PatientID", "AccessionNumber", "PatientSex")
    }
    return queries.NewInstance(
        sop_instance_uid=identity.sop_instance_uid,
        study_instance_uid=identity.study_instance_uid,
        series_instance_uid=identity.series_instance_uid,
        sop_class_uid=identity.sop_class_uid,
        spool_path=str(path),
        calling_ae_title=request.calling_ae_title,
        peer_address=request.peer,
        patient_id=searched["PatientID"],
        accession_number=searched["AccessionNumber"],
        patient_sex=searched["PatientSex"],
        status=InstanceStatus.FAILED if problem else InstanceStatus.RECEIVED,
        error=problem,
    )
