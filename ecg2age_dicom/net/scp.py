"""The listener: a pynetdicom AE that accepts the scored ECG storage classes.

Declared on the AE: the presentation contexts (:data:`~ecg2age_dicom.identity.SCORED_SOP_CLASSES`
and Verification), the called AE title (must be ``[listener] ae_title``), the allowed calling
AE titles (when set), the association limit and the timeouts. Around pynetdicom:
:class:`~ecg2age_dicom.net.sockets.ListenerServer` bounds TLS handshakes and partial PDUs;
each incoming dataset is written by pynetdicom to a file in the spool's ``incoming/`` folder
as it arrives (``STORE_RECV_CHUNKED_DATASET``), and :class:`_SizeGuard` aborts an association
whose dataset grows over ``max_instance_bytes``, so memory and disk stay bounded.

The C-STORE handler stays thin: :meth:`Receiver.accept` (header checks, spool, database)
then the DICOM status.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import threading
from pathlib import Path
from typing import cast

from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at import

from ecg2age_dicom.config import ListenerSettings
from ecg2age_dicom.errors import ConfigError
from ecg2age_dicom.identity import SCORED_SOP_CLASSES, shown
from ecg2age_dicom.net.sockets import NO_DELAY_HANDLER, ListenerServer
from ecg2age_dicom.receive import ReceiveOutcome, Receiver, StoreRequest

log = logging.getLogger(__name__)

TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]
MIN_PDU_CAP = 1 << 20  # an A-ASSOCIATE-RQ with many contexts may exceed a small P-DATA limit


class Status:
    """The C-STORE statuses this listener answers with (PS3.4 Annex B)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000


_STATUS = {
    ReceiveOutcome.STORED: Status.SUCCESS,
    ReceiveOutcome.DUPLICATE: Status.SUCCESS,
    ReceiveOutcome.INVALID: Status.CANNOT_UNDERSTAND,
    ReceiveOutcome.UNREADABLE: Status.CANNOT_UNDERSTAND,
    ReceiveOutcome.MISMATCH: Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    ReceiveOutcome.NOT_STORED: Status.OUT_OF_RESOURCES,
}


def _status(code: int, comment: str = "") -> Dataset:
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = comment[:64]  # LO
    return status


def handle_store(event: evt.Event, receiver: Receiver) -> Dataset:
    """EVT_C_STORE: hand the received file to the receiver, answer its outcome. The sender
    is the peer: the requestor of the listener's associations, the acceptor of a C-GET's."""
    assoc = event.assoc
    request, peer = (
        cast(C_STORE, event.request),
        assoc.acceptor if assoc.is_requestor else assoc.requestor,
    )
    received = receiver.accept(
        event.dataset_path,
        StoreRequest(
            sop_class_uid=str(request.AffectedSOPClassUID or ""),
            sop_instance_uid=str(request.AffectedSOPInstanceUID or ""),
            context_sop_class_uid=str(event.context.abstract_syntax),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            calling_ae_title=str(peer.ae_title).strip(),
            peer=f"{peer.address}:{peer.port}",
        ),
    )
    return _status(_STATUS[received.outcome], received.reason)


class _SizeGuard:
    """Counts each incoming dataset's bytes as its P-DATA PDUs arrive; aborts the association
    of one that grows over ``max_bytes``, and removes the partial file it leaves."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._received: dict[int, int] = {}
        self._lock = threading.Lock()

    def on_pdu(self, event: evt.Event) -> None:
        items = getattr(event.pdu, "presentation_data_value_items", None)
        if not items:
            return
        key = id(event.assoc)
        with self._lock:
            total = self._received.get(key, 0)
            for item in items:
                header = item.presentation_data_value[0]
                if header & 1:  # command fragment: not counted
                    continue
                total += len(item.presentation_data_value) - 1
                if header & 2:  # last fragment of the dataset
                    total = 0
            self._received[key] = total
        if total > self.max_bytes:
            log.warning(
                "aborting association from %s (calling AE %s): dataset over %d bytes",
                event.assoc.requestor.address,
                shown(event.assoc.requestor.ae_title, 24),
                self.max_bytes,
            )
            event.assoc.abort(block=False)

    def on_close(self, event: evt.Event) -> None:
        with self._lock:
            self._received.pop(id(event.assoc), None)
        _remove_partial_dataset(event.assoc)


def _remove_partial_dataset(assoc: Association) -> None:
    """The files pynetdicom wrote for messages that will not be answered: the one still
    arriving, and any received but not yet handled when the connection closed."""
    paths = [getattr(assoc.dimse.message, "_data_set_path", None)]
    paths += [getattr(request, "_dataset_path", None) for _, request in assoc.dimse.msg_queue.queue]
    for path in paths:
        if isinstance(path, str | Path):
            Path(path).unlink(missing_ok=True)


def receive_into(incoming: Path) -> None:
    """Have pynetdicom write each incoming dataset to a file in ``incoming`` as it arrives
    (this process's temporary folder), for every association of this process."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    tempfile.tempdir = str(incoming)


def storage_handlers(receiver: Receiver) -> list[EventHandlerType]:
    """The handlers of an association that receives ECGs (the listener's, a C-GET's): the
    size guard at the receiver's limit, and each C-STORE handed to the receiver."""
    guard = _SizeGuard(receiver.max_bytes)
    return [
        (evt.EVT_PDU_RECV, guard.on_pdu),
        (evt.EVT_CONN_CLOSE, guard.on_close),
        (evt.EVT_C_STORE, handle_store, [receiver]),
    ]


def ssl_context(settings: ListenerSettings) -> ssl.SSLContext | None:
    """The server-side TLS context from ``[listener.tls]``, or None."""
    if settings.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=settings.tls.ca)
    context.load_cert_chain(settings.tls.cert, settings.tls.key)
    context.verify_mode = (
        ssl.CERT_REQUIRED
        if settings.tls.require_client_cert
        else (ssl.CERT_OPTIONAL if settings.tls.ca else ssl.CERT_NONE)
    )
    return context


def start_listener(
    settings: ListenerSettings, receiver: Receiver, incoming: Path
) -> ListenerServer:
    """Start the AE in the background; returns the server (``shutdown()`` stops it).

    Raises
    ------
    ConfigError
        The address cannot be bound (in use, or not this host's).

    ``incoming`` is where pynetdicom writes the datasets it receives: this process's
    temporary folder (``tempfile.tempdir``), on the spool's file system so that an accepted
    file is renamed into the spool, not copied.
    """
    receive_into(incoming)
    ae = AE(ae_title=settings.ae_title)
    for sop_class in SCORED_SOP_CLASSES:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu_bytes
    ae.acse_timeout = settings.acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.network_timeout_s
    handlers: list[EventHandlerType] = [
        NO_DELAY_HANDLER,
        *storage_handlers(receiver),
        (evt.EVT_C_ECHO, lambda event: Status.SUCCESS),
    ]
    pdu_cap = settings.max_pdu_bytes or settings.max_instance_bytes
    try:
        server = cast(
            ListenerServer,
            ae.make_server(
                (settings.host, settings.port),
                evt_handlers=handlers,
                server_class=ListenerServer,
                tls=ssl_context(settings),
                handshake_timeout_s=settings.acse_timeout_s,
                pdu_timeout_s=settings.network_timeout_s,
                max_pdu_bytes=max(pdu_cap, MIN_PDU_CAP),
            ),
        )
    except OSError as exc:  # the port in use, or an address not this host's
        raise ConfigError(
            f"[listener] cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
        ) from None
    threading.Thread(target=server.serve_forever, name="listener", daemon=True).start()
    return server
