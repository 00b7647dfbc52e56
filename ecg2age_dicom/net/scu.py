"""Sending reports to a destination, one association per burst.

Files are sent as they are on disk, without decoding. :class:`ReportSender` reports a typed
outcome per file: delivered (a success or warning status), a retryable failure (association
refused or aborted, network down, timeouts, 0xA7xx out of resources, not authorised), or a
permanent failure (the destination refused the object itself, or the report file cannot be
read). Every wait is bounded by ``[delivery]``'s timeouts; :meth:`ReportSender.close` aborts
what is in flight and refuses new sends, so that a hung destination cannot hold up a stop.
"""

from __future__ import annotations

import enum
import logging
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EncapsulatedPDFStorage,
    EnhancedSRStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.pdu_primitives import A_ABORT
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from ecg2age_dicom.config import DeliverySettings, Destination
from ecg2age_dicom.net.reactor import CHECKPOINT_HANDLER
from ecg2age_dicom.net.sockets import NO_DELAY_HANDLER

log = logging.getLogger(__name__)

REPORT_STORAGE = (
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    Comprehensive3DSRStorage,
    EncapsulatedPDFStorage,
    SecondaryCaptureImageStorage,
)
# Failures worth another try later: the destination may get resources or our authorisation.
RETRYABLE_FAILURES = frozenset({*range(0xA700, 0xA800), 0x0124, 0x0210, 0x0211, 0x0212})


class Outcome(str, enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SendResult:
    """What happened to one file."""

    path: str
    outcome: Outcome
    detail: str = ""


def outcome_of(status: int) -> Outcome:
    """The outcome of a C-STORE response status (pynetdicom's categories)."""
    if code_to_category(status) in (STATUS_SUCCESS, STATUS_WARNING):
        return Outcome.DELIVERED
    return Outcome.RETRY if status in RETRYABLE_FAILURES else Outcome.PERMANENT


class ReportSender:
    """Sends report files as ``ae_title``, with the ``[delivery]`` timeouts.

    Calling it sends the files over one association to a destination; :meth:`close` (from
    any thread) aborts the associations in flight and makes every later call fail at once.
    """

    def __init__(self, ae_title: str, timeouts: DeliverySettings) -> None:
        # Send files without decoding and re-encoding them (pynetdicom's documented switch;
        # a Dataset passed instead is still converted to the negotiated transfer syntax).
        _config.STORE_SEND_CHUNKED_DATASET = True
        self.ae_title = ae_title
        self.timeouts = timeouts
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: set[Association] = set()

    def _track(self, event: evt.Event) -> None:
        with self._lock:
            self._in_flight.add(event.assoc)
        if self._closed.is_set():  # closed while this one was connecting
            event.assoc.abort(block=False)

    def _untrack(self, event: evt.Event) -> None:
        with self._lock:
            self._in_flight.discard(event.assoc)

    def close(self) -> None:
        """Refuse new sends; abort the associations in flight and end their waits now.

        pynetdicom's own abort waits for the peer to close the connection, and leaves a
        sender waiting for an answer until its timeout: the waits are ended here by giving
        each the answer "aborted" (an A-ABORT to the association request, no response to
        the C-STORE).
        """
        self._closed.set()
        with self._lock:
            in_flight = list(self._in_flight)
        for assoc in in_flight:
            assoc.abort(block=False)  # A-ABORT to the peer
            assoc.dul.to_user_queue.put(A_ABORT())  # waiting for the association answer
            assoc.dimse.msg_queue.put((None, None))  # waiting for a C-STORE response

    def __call__(self, destination: Destination, paths: Sequence[str]) -> list[SendResult]:
        """C-STORE every file over one association to ``destination``."""
        if self._closed.is_set():
            return [
                SendResult(p, Outcome.RETRY, "not sent: the service is stopping") for p in paths
            ]
        handlers: list[EventHandlerType] = [
            (evt.EVT_CONN_OPEN, self._track),
            (evt.EVT_CONN_CLOSE, self._untrack),
        ]
        assoc = associate(self.ae_title, destination, self.timeouts, REPORT_STORAGE, handlers)
        if isinstance(assoc, str):
            return [SendResult(p, Outcome.RETRY, assoc) for p in paths]
        return self._send_all(assoc, paths)

    def echo(self, destination: Destination) -> str:
        """C-ECHO ``destination``: "" when it answers with success, else why not."""
        assoc = associate(self.ae_title, destination, self.timeouts, (Verification,), [])
        if isinstance(assoc, str):
            return assoc
        try:
            answer = assoc.send_c_echo()
        finally:
            if assoc.is_established:
                assoc.release()
        status = answer.get("Status") if answer else None
        if status is None:
            return "no answer to C-ECHO"
        return "" if code_to_category(status) == STATUS_SUCCESS else f"C-ECHO status 0x{status:04X}"

    def _send_all(self, assoc: Association, paths: Sequence[str]) -> list[SendResult]:
        results = []
        try:
            for path in paths:
                if self._closed.is_set():
                    break
                results.append(_send_one(assoc, path))
                if not assoc.is_established:
                    break
        finally:
            if assoc.is_established and not self._closed.is_set():
                assoc.release()
        sent = {result.path for result in results}
        ended = (
            "not sent: the service is stopping"
            if self._closed.is_set()
            else ("association ended early")
        )
        return results + [SendResult(p, Outcome.RETRY, ended) for p in paths if p not in sent]


def _send_one(assoc: Association, path: str) -> SendResult:
    try:
        try:
            status = assoc.send_c_store(Path(path))  # the file's bytes as they are
        except ValueError:  # the peer took none of our syntaxes for the file's: convert
            status = assoc.send_c_store(dcmread(Path(path)))
    except (OSError, ValueError, AttributeError) as exc:
        return SendResult(path, Outcome.PERMANENT, f"cannot send report {path}: {exc}")
    if not status or "Status" not in status:
        return SendResult(path, Outcome.RETRY, "no response (timeout or aborted association)")
    code = int(status.Status)
    outcome = outcome_of(code)
    if outcome is Outcome.DELIVERED:
        return SendResult(path, outcome, f"status 0x{code:04X}" if code else "")
    comment = str(status.get("ErrorComment", "")).strip()
    return SendResult(
        path, outcome, f"C-STORE status 0x{code:04X}" + (f": {comment}" if comment else "")
    )


def associate(
    ae_title: str,
    peer: Destination,
    timeouts: DeliverySettings,
    sop_classes: Sequence[str],
    handlers: list[EventHandlerType],
    *,
    scp_roles: Sequence[str] = (),
) -> Association | str:
    """An established association from ``ae_title`` to ``peer`` proposing ``sop_classes``
    (and taking the SCP role for ``scp_roles``: C-GET's storage), with the ``[delivery]``
    timeouts, or why there is none. Every one has Nagle off and the reactor checkpoint
    (:mod:`ecg2age_dicom.net.reactor`: without it a response can be lost), before
    ``handlers``."""
    ae = AE(ae_title=ae_title)
    ae.connection_timeout = timeouts.connect_timeout_s
    ae.acse_timeout = timeouts.acse_timeout_s
    ae.dimse_timeout = timeouts.dimse_timeout_s
    ae.network_timeout = timeouts.network_timeout_s
    for sop_class in (*sop_classes, *scp_roles):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    tls = None
    if peer.tls:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=peer.tls_ca)
        tls = (context, peer.host)
    try:
        assoc = ae.associate(
            peer.host,
            peer.port,
            ae_title=peer.ae_title,
            tls_args=tls,
            evt_handlers=[NO_DELAY_HANDLER, CHECKPOINT_HANDLER, *handlers],
            ext_neg=[build_role(sop_class, scp_role=True) for sop_class in scp_roles] or None,
        )
    except (OSError, ssl.SSLError) as exc:
        return f"cannot connect to {peer.host}:{peer.port}: {exc}"
    if not assoc.is_established:
        state = "rejected" if assoc.is_rejected else "aborted or failed"
        return f"association to {peer.ae_title}@{peer.host}:{peer.port} {state}"
    return assoc
