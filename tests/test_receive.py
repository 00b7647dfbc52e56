"""``Receiver.accept``: every outcome, for well-behaved and hostile senders alike."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pydicom
import pydicom.config
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import DeflatedExplicitVRLittleEndian
from sqlalchemy import select

from ecg2age_dicom import receive as receive_module
from ecg2age_dicom.logs import SafeLineFilter
from ecg2age_dicom.receive import MAX_SEQUENCE_ITEMS, ReceiveOutcome, Receiver
from ecg2age_dicom.spool import Spool
from ecg2age_dicom.store.models import InstanceStatus, ReceivedInstance
from tests.ecg_factory import make_ecg
from tests.receive_factory import receive, request_for

SAMPLE = Path(get_testdata_file("waveform_ecg.dcm"))
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
HEMODYNAMIC = "1.2.840.10008.5.1.4.1.1.9.2.1"


@pytest.fixture
def receiver(store, tmp_path) -> Receiver:
    _, sessions = store
    return Receiver(sessions, Spool(tmp_path / "spool"), max_bytes=5_000_000)


def rows(receiver: Receiver) -> dict[str, ReceivedInstance]:
    with receiver.sessions() as session:
        return {r.sop_instance_uid: r for r in session.scalars(select(ReceivedInstance))}


def spool_files(receiver: Receiver) -> list[Path]:
    return sorted(p for p in receiver.spool.root.rglob("*") if p.is_file())


def written(tmp_path: Path, name: str, change=None, **factory) -> Path:
    """A factory ECG written to a file after ``change(dataset)``, values unchecked."""
    ecg = make_ecg(**factory)
    with pydicom.config.disable_value_validation():
        if change is not None:
            change(ecg.dataset)
        return ecg.write(tmp_path / name)


def patched(path: Path, old: bytes, new: bytes) -> Path:
    """Replace the first ``old`` in the file's bytes by ``new`` (same length): a value
    pydicom would refuse to write, as a cart writes it."""
    data = path.read_bytes()
    assert len(old) == len(new) and old in data
    path.write_bytes(data.replace(old, new, 1))
    return path


def test_a_new_ecg_is_spooled_recorded_and_announced(receiver):
    rings = []
    receiver.doorbell.ring = lambda: rings.append(1)  # type: ignore[method-assign]
    received = receive(receiver, SAMPLE)
    assert received.outcome is ReceiveOutcome.STORED
    uid = str(pydicom.dcmread(SAMPLE).SOPInstanceUID)
    row = rows(receiver)[uid]
    assert row.status is InstanceStatus.RECEIVED and row.calling_ae_title == "CART7"
    assert Path(row.spool_path) == receiver.spool.received_path(uid)
    assert Path(row.spool_path).read_bytes() == SAMPLE.read_bytes()
    assert rings == [1]
    assert receive(receiver, SAMPLE).outcome is ReceiveOutcome.DUPLICATE
    assert rings == [1] and len(rows(receiver)) == 1


HOSTILE_UIDS = [
    "../../../../tmp/ecg2age-escape",
    "/tmp/ecg2age-absolute",
    "1.2/3.4/5",
    "1.2.abc.4",
    "1.2.3\nINFO forged log line",
    "1.2\x003",
    "1.02.3",
    "1..3",
    "",
    "1" * 65,
]


@pytest.mark.parametrize("uid", HOSTILE_UIDS, ids=ascii)
def test_a_hostile_sop_instance_uid_is_refused_and_touches_no_file(receiver, tmp_path, uid, caplog):
    def hostile(ds: Dataset) -> None:
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid or "1.2.3"

    path = written(tmp_path, "hostile.dcm", hostile)
    caplog.handler.addFilter(SafeLineFilter())
    received = receive(receiver, path, request_for(path, sop_instance_uid=uid))
    assert received.outcome is ReceiveOutcome.MISMATCH
    assert "SOP Instance UID" in received.reason
    assert rows(receiver) == {} and spool_files(receiver) == []
    assert not Path("/tmp/ecg2age-escape.dcm").exists()
    assert not Path("/tmp/ecg2age-absolute.dcm").exists()
    assert all("\n" not in record.getMessage() for record in caplog.records)


def test_a_uid_aiming_at_another_ecg_cannot_replace_its_file(receiver, tmp_path):
    victim = make_ecg().write(tmp_path / "victim.dcm")
    assert receive(receiver, victim).outcome is ReceiveOutcome.STORED
    victim_uid = str(pydicom.dcmread(victim).SOPInstanceUID)
    kept = receiver.spool.received_path(victim_uid).read_bytes()

    def aim(ds: Dataset) -> None:
        ds.SOPInstanceUID = f"x/../{victim_uid}"

    attacker = written(tmp_path, "attacker.dcm", aim, seconds=20.0)
    received = receive(receiver, attacker)
    assert received.outcome is ReceiveOutcome.MISMATCH
    assert receiver.spool.received_path(victim_uid).read_bytes() == kept
    assert list(rows(receiver)) == [victim_uid]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda ds: delattr(ds, "StudyInstanceUID"), "Study Instance UID (0020,000D) is missing"),
        (
            lambda ds: setattr(ds, "SeriesInstanceUID", "...20021122091000..1"),
            "Series Instance UID",
        ),
        (lambda ds: setattr(ds, "SOPClassUID", ""), "SOP Class UID (0008,0016) is missing"),
        (lambda ds: setattr(ds, "SOPClassUID", HEMODYNAMIC), "is not scored"),
    ],
    ids=["no-study-uid", "invalid-series-uid", "empty-sop-class", "hemodynamic"],
)
def test_an_instance_without_a_valid_identity_is_refused_unstored(
    receiver, tmp_path, change, reason
):
    path = written(tmp_path, "bad.dcm", change)
    received = receive(receiver, path)
    assert received.outcome is ReceiveOutcome.MISMATCH and reason in received.reason
    assert rows(receiver) == {} and spool_files(receiver) == []


def test_the_command_must_name_the_context_and_the_dataset_sop_class(receiver, tmp_path):
    path = make_ecg().write(tmp_path / "ecg.dcm")
    for request in (
        request_for(path, sop_class_uid=CT_IMAGE_STORAGE),
        request_for(path, context_sop_class_uid=CT_IMAGE_STORAGE),
        request_for(path, sop_instance_uid="1.2.3"),
    ):
        received = receive(receiver, path, request)
        assert received.outcome is ReceiveOutcome.MISMATCH, request
    assert rows(receiver) == {}


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b"500.000 ", b"abc     ", "SamplingFrequency"),
        (b"500.000 ", b"500\\250 ", "SamplingFrequency"),
        (b"2.5 ", b"abc ", "ChannelSensitivity"),
        (b"2.5 ", b"NaN ", "ChannelSensitivity"),
        (b"0.25", b"inf ", "ChannelBaseline"),
        (b"2.5 ", b"1e38", "is not that of an ECG channel"),
    ],
    ids=["fs-text", "fs-two-values", "sensitivity-text", "sensitivity-nan", "baseline-inf", "huge"],
)
def test_malformed_values_are_cannot_understand_and_kept_in_quarantine(
    receiver, tmp_path, old, new, reason
):
    def rate(ds: Dataset) -> None:
        ds.WaveformSequence[0].SamplingFrequency = "500.000"

    path = patched(written(tmp_path, "bad.dcm", rate, baseline=0.25), old, new)
    received = receive(receiver, path)
    assert received.outcome is ReceiveOutcome.INVALID
    assert reason in received.reason
    (row,) = rows(receiver).values()
    assert row.status is InstanceStatus.FAILED and reason in row.error
    assert Path(row.spool_path).parent == receiver.spool.quarantine


def test_a_nul_inside_a_uid_is_refused(receiver, tmp_path):
    path = make_ecg().write(tmp_path / "ecg.dcm")
    uid = str(pydicom.dcmread(path).SOPInstanceUID)
    broken = uid[:-2] + "\x00" + uid[-1]
    data = path.read_bytes()
    path.write_bytes(data.replace(uid.encode(), broken.encode()))
    received = receive(receiver, path, request_for(path, sop_instance_uid=broken))
    assert received.outcome is ReceiveOutcome.MISMATCH


def test_an_instance_over_the_size_limit_is_not_stored(store, tmp_path):
    _, sessions = store
    small = Receiver(sessions, Spool(tmp_path / "spool"), max_bytes=1000)
    received = receive(small, SAMPLE)
    assert received.outcome is ReceiveOutcome.NOT_STORED and "over 1000 bytes" in received.reason


def test_too_many_sequence_items_are_refused_before_parsing(receiver, tmp_path):
    def many(ds: Dataset) -> None:
        group = ds.WaveformSequence[0]
        group.ChannelDefinitionSequence = DicomSequence([Dataset() for _ in range(150_000)])
        group["ChannelDefinitionSequence"].is_undefined_length = True
        ds["WaveformSequence"].is_undefined_length = True

    received = receive(receiver, written(tmp_path, "many.dcm", many))
    assert received.outcome is ReceiveOutcome.UNREADABLE
    assert f"more than {MAX_SEQUENCE_ITEMS}" in received.reason
    assert rows(receiver) == {}


def test_bytes_that_are_not_dicom_are_unreadable(receiver, tmp_path):
    path = tmp_path / "garbage.dcm"
    path.write_bytes(os.urandom(4096))
    request = request_for(SAMPLE)
    assert receive(receiver, path, request).outcome is ReceiveOutcome.UNREADABLE


def test_a_full_disk_is_out_of_resources_and_leaves_nothing_behind(receiver, tmp_path, monkeypatch):
    def full(source: Path, target: Path) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(receive_module, "move_durably", full)
    received = receive(receiver, SAMPLE)
    assert received.outcome is ReceiveOutcome.NOT_STORED and "OSError" in received.reason
    assert rows(receiver) == {}
    assert [p for p in spool_files(receiver) if p.parent != receiver.spool.incoming] == []


def test_a_deflated_ecg_is_stored_and_a_deflate_bomb_is_refused(store, receiver, tmp_path):
    deflated = make_ecg().write(tmp_path / "deflated.dcm", DeflatedExplicitVRLittleEndian)
    assert receive(receiver, deflated).outcome is ReceiveOutcome.STORED
    quiet = make_ecg(fs=1000, seconds=60.0, signal=np.zeros((60_000, 12)))
    bomb = quiet.write(tmp_path / "bomb.dcm", DeflatedExplicitVRLittleEndian)
    _, sessions = store
    small = Receiver(sessions, Spool(tmp_path / "small"), max_bytes=500_000)
    assert bomb.stat().st_size < 500_000
    received = receive(small, bomb)
    assert received.outcome is ReceiveOutcome.UNREADABLE and "inflates to more" in received.reason
