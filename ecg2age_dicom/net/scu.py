"""Sending Structured Reports to a destination, one association per burst.

Files are sent as they are on disk, without decoding. :func:`send_files` reports a typed
outcome per file: delivered, a retryable failure (association refused or aborted, network
down, timeouts, 0xA7xx out of resources), or a permanent failure (the destination refused
the object itself, or the report file cannot be read).
"""

from __future__ import annotations

import enum
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
)

from ecg2age_dicom.config import Destination
from ecg2age_dicom.net import NO_DELAY_HANDLER

log = logging.getLogger(__name__)

# Send report files without decoding and re-encoding them (pynetdicom's documented switch;
# a Dataset passed instead is still converted to the negotiated transfer syntax).
_config.STORE_SEND_CHUNKED_DATASET = True

SR_STORAGE = (ComprehensiveSRStorage, EnhancedSRStorage, Comprehensive3DSRStorage)
SUCCESS = 0x0000
WARNING_STATUSES = (0x0001, 0xB000, 0xB006, 0xB007)


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


def _retryable_status(status: int) -> bool:
    return 0xA700 <= status <= 0xA7FF or status in (0x0122, 0x0124, 0x0210, 0x0211, 0x0212)


def send_files(
    calling_ae_title: str,
    destination: Destination,
    paths: Sequence[str],
    timeout_s: float = 30.0,
) -> list[SendResult]:
    """C-STORE every file over one association to ``destination``."""
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    for sop_class in SR_STORAGE:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    tls = None
    if destination.tls:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=destination.tls_ca)
        tls = (context, destination.host)
    try:
        assoc = ae.associate(
            destination.host,
            destination.port,
            ae_title=destination.ae_title,
            tls_args=tls,
            evt_handlers=[NO_DELAY_HANDLER],
        )
    except (OSError, ssl.SSLError) as exc:
        detail = f"cannot connect to {destination.host}:{destination.port}: {exc}"
        return [SendResult(p, Outcome.RETRY, detail) for p in paths]
    if not assoc.is_established:
        state = "rejected" if assoc.is_rejected else "aborted or failed"
        detail = (
            f"association to {destination.ae_title}@{destination.host}:{destination.port} {state}"
        )
        return [SendResult(p, Outcome.RETRY, detail) for p in paths]
    results = []
    try:
        for path in paths:
            results.append(_send_one(assoc, path))
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    sent = {result.path for result in results}
    results += [
        SendResult(p, Outcome.RETRY, "association ended early") for p in paths if p not in sent
    ]
    return results


def _send_one(assoc, path: str) -> SendResult:
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
    comment = str(status.get("ErrorComment", "")).strip()
    if code == SUCCESS or code in WARNING_STATUSES:
        return SendResult(path, Outcome.DELIVERED, f"status 0x{code:04X}" if code else "")
    detail = f"C-STORE status 0x{code:04X}" + (f": {comment}" if comment else "")
    outcome = Outcome.RETRY if _retryable_status(code) else Outcome.PERMANENT
    return SendResult(path, outcome, detail)
