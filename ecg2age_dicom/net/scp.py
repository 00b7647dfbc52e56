"""The listener: a pynetdicom AE that accepts the four ECG waveform storage classes.

The C-STORE handler stays thin: size limit, then :meth:`Receiver.accept` (spool, database,
cheap validation), then the DICOM status. Calling AE titles outside
``allowed_calling_ae_titles`` (when set) are rejected at association; TLS from
``[listener.tls]``.
"""

from __future__ import annotations

import logging
import ssl

from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from ecg2age_dicom.config import ListenerSettings
from ecg2age_dicom.net import NO_DELAY_HANDLER
from ecg2age_dicom.pipeline import ReceiveOutcome, Receiver
from ecg2age_dicom.waveform import ECG_WAVEFORM_SOP_CLASSES

log = logging.getLogger(__name__)

TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
]


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
    ReceiveOutcome.MISMATCH: Status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    ReceiveOutcome.NOT_STORED: Status.OUT_OF_RESOURCES,
}


def _status(code: int, comment: str = "") -> Dataset:
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = comment[:64]  # LO
    return status


def handle_store(event: evt.Event, receiver: Receiver, max_bytes: int) -> Dataset:
    """EVT_C_STORE: store, validate cheaply, answer."""
    encoded = event.encoded_dataset()
    request = event.request
    if len(encoded) > max_bytes:
        return _status(Status.OUT_OF_RESOURCES, f"instance over {max_bytes} bytes")
    requestor = event.assoc.requestor
    received = receiver.accept(
        encoded,
        str(request.AffectedSOPClassUID),
        str(request.AffectedSOPInstanceUID),
        requestor.ae_title.strip() if isinstance(requestor.ae_title, str) else "",
        f"{requestor.address}:{requestor.port}",
    )
    return _status(_STATUS[received.outcome], received.reason)


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


def start_listener(settings: ListenerSettings, receiver: Receiver) -> ThreadedAssociationServer:
    """Start the AE in the background; returns the server (``shutdown()`` stops it)."""
    ae = AE(ae_title=settings.ae_title)
    for sop_class in ECG_WAVEFORM_SOP_CLASSES:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.require_calling_aet = list(settings.allowed_calling_ae_titles)
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.max_pdu_bytes
    ae.acse_timeout = settings.acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.network_timeout_s
    handlers = [
        NO_DELAY_HANDLER,
        (evt.EVT_C_STORE, handle_store, [receiver, settings.max_instance_bytes]),
        (evt.EVT_C_ECHO, lambda event: Status.SUCCESS),
    ]
    server = ae.start_server(
        (settings.host, settings.port),
        block=False,
        ssl_context=ssl_context(settings),
        evt_handlers=handlers,
    )
    assert server is not None
    return server
