"""Hand files to a :class:`Receiver` the way the listener does: from ``incoming/``."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pydicom

from ecg2age_dicom.receive import Received, Receiver, StoreRequest


def request_for(path: Path, calling: str = "CART7", **override: str) -> StoreRequest:
    """The C-STORE request a well-behaved sender of ``path`` makes (fields overridable)."""
    header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    sop_class = str(header.get("SOPClassUID", ""))
    fields = {
        "sop_class_uid": sop_class,
        "sop_instance_uid": str(header.get("SOPInstanceUID", "")),
        "context_sop_class_uid": sop_class,
        "transfer_syntax_uid": str(header.file_meta.get("TransferSyntaxUID", "")),
        "calling_ae_title": calling,
        "peer": "127.0.0.1:40000",
    }
    return StoreRequest(**{**fields, **override})


def receive(
    receiver: Receiver, path: Path, request: StoreRequest | None = None, calling: str = "CART7"
) -> Received:
    """Copy ``path`` into the spool's incoming folder, accept it, and remove what is left
    there, as pynetdicom does after the handler."""
    incoming = receiver.spool.incoming
    incoming.mkdir(parents=True, exist_ok=True)
    arrived = incoming / f"tmp{uuid.uuid4().hex}.dcm"
    shutil.copyfile(path, arrived)
    try:
        return receiver.accept(arrived, request or request_for(path, calling))
    finally:
        arrived.unlink(missing_ok=True)
