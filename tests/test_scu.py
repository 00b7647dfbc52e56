"""Sending reports: ``ReportSender`` against an in-process pynetdicom SCP, the reactor
hand-shake fix, and a stop that does not wait for a hung destination."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import ComprehensiveSRStorage

from ecg2age_dicom import sr
from ecg2age_dicom.config import DeliverySettings, Destination
from ecg2age_dicom.dicomfile import write_atomically
from ecg2age_dicom.net import reactor, scu
from ecg2age_dicom.net.scu import REPORT_STORAGE, Outcome, ReportSender, outcome_of
from ecg2age_dicom.net.sockets import NO_DELAY_HANDLER
from tests.ecg_factory import make_ecg

MODEL = sr.AlgorithmDescription("M", "1", "research", False)
TIMEOUTS = DeliverySettings(
    connect_timeout_s=5, acse_timeout_s=60, dimse_timeout_s=60, network_timeout_s=60
)


class PACS:
    """An in-process storage SCP answering ``status`` to every C-STORE."""

    def __init__(self) -> None:
        self.status = 0x0000
        self.received: list[str] = []
        ae = AE(ae_title="PACS")
        for sop_class in REPORT_STORAGE:
            ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.server = ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            evt_handlers=[NO_DELAY_HANDLER, (evt.EVT_C_STORE, self._store)],
        )
        self.port = self.server.server_address[1]
        self.destination = Destination(
            name="PACS", ae_title="PACS", host="127.0.0.1", port=self.port
        )

    def _store(self, event: evt.Event) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return self.status


@pytest.fixture
def pacs() -> Iterator[PACS]:
    started = PACS()
    yield started
    started.server.shutdown()


def reports(folder: Path, count: int) -> list[str]:
    paths = []
    for _ in range(count):
        report = sr.build_report(make_ecg().dataset, MODEL, 50.0)
        path = folder / f"{report.sop_instance_uid}.dcm"
        paths.append(str(write_atomically(path, report.encoded)))
    return paths


def test_reports_are_delivered_and_a_missing_file_fails_permanently(pacs, tmp_path):
    paths = reports(tmp_path, 3)
    results = ReportSender("ECG2AGE", TIMEOUTS)(
        pacs.destination, [*paths, str(tmp_path / "gone.dcm")]
    )
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 3 + [Outcome.PERMANENT]
    assert len(pacs.received) == 3


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(0xB000, Outcome.DELIVERED), (0xA700, Outcome.RETRY), (0xA900, Outcome.PERMANENT)],
)
def test_the_destination_status_decides_the_outcome(pacs, tmp_path, status, outcome):
    pacs.status = status
    (result,) = ReportSender("ECG2AGE", TIMEOUTS)(pacs.destination, reports(tmp_path, 1))
    assert result.outcome is outcome and result.outcome is outcome_of(status)


def test_a_destination_that_is_down_is_retried(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = Destination(name="DOWN", ae_title="PACS", host="127.0.0.1", port=port)
    results = ReportSender("ECG2AGE", TIMEOUTS)(down, reports(tmp_path, 2))
    assert {r.outcome for r in results} == {Outcome.RETRY}


def test_close_ends_a_send_to_a_destination_that_never_answers(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts the connection, never answers the association request
    port = silent.getsockname()[1]
    sender = ReportSender("ECG2AGE", TIMEOUTS)
    hung = Destination(name="HUNG", ae_title="PACS", host="127.0.0.1", port=port)
    results: list = []
    thread = threading.Thread(target=lambda: results.extend(sender(hung, reports(tmp_path, 2))))
    thread.start()
    time.sleep(1.0)  # connected, waiting for the A-ASSOCIATE-AC (ACSE timeout: 60 s)
    sender.close()
    thread.join(timeout=10)
    silent.close()
    assert not thread.is_alive(), "close() did not end the wait for the association answer"
    assert {r.outcome for r in results} == {Outcome.RETRY}
    assert sender(hung, ["x.dcm"])[0].detail == "not sent: the service is stopping"


# -- the reactor hand-shake ------------------------------------------------------------------
# A response is lost when the reactor resumes (its checkpoint wait() returned) while the
# sender believes it paused, and takes the response before the sender asks for it. These
# helpers make both thread switches happen every time: the reactor is preempted right after
# wait() returns, the sender right after it sent its request.
REACTOR_SWITCH_S = 0.02
SENDER_SWITCH_S = 0.04


class _SlowResumingEvent(threading.Event):
    """pynetdicom's own checkpoint (an Event), preempted after each wait()."""

    def wait(self, timeout: float | None = None) -> bool:
        resumed = super().wait(timeout)
        time.sleep(REACTOR_SWITCH_S)
        return resumed


class _SlowResumingCheckpoint(reactor.ReactorCheckpoint):
    """The fixed checkpoint, preempted after each wait()."""

    def wait(self, timeout: float | None = None) -> bool:
        resumed = super().wait(timeout)
        time.sleep(REACTOR_SWITCH_S)
        return resumed


def _preempt_after_sending(event: evt.Event) -> None:
    """EVT_CONN_OPEN: the association's sender thread is preempted after each request."""
    send_msg = event.assoc.dimse.send_msg

    def send_then_yield(*args, **kwargs) -> None:
        send_msg(*args, **kwargs)
        time.sleep(SENDER_SWITCH_S)

    event.assoc.dimse.send_msg = send_then_yield


def stock_checkpoint(assoc) -> threading.Event:
    checkpoint = _SlowResumingEvent()
    checkpoint.set()  # as pynetdicom creates it
    return checkpoint


def send_burst(port: int, checkpoint, count: int, dimse_timeout_s: float) -> list[bool]:
    """C-STORE ``count`` small reports over one association whose reactor checkpoint is
    ``checkpoint(assoc)``; True for each one answered."""
    ae = AE(ae_title="ECG2AGE")
    ae.dimse_timeout = dimse_timeout_s
    ae.add_requested_context(ComprehensiveSRStorage, ExplicitVRLittleEndian)

    def install(event: evt.Event) -> None:
        event.assoc._reactor_checkpoint = checkpoint(event.assoc)

    handlers = [
        NO_DELAY_HANDLER,
        (evt.EVT_CONN_OPEN, install),
        (evt.EVT_CONN_OPEN, _preempt_after_sending),
    ]
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS", evt_handlers=handlers)
    assert assoc.is_established
    document = sr.build_report(make_ecg().dataset, MODEL, 50.0).dataset()
    answered = []
    for _ in range(count):
        if not assoc.is_established:
            answered.append(False)
            continue
        status = assoc.send_c_store(document)
        answered.append("Status" in status)
    if assoc.is_established:
        assoc.release()
    return answered


def test_pynetdicoms_own_hand_shake_loses_responses_when_the_reactor_is_preempted(pacs, caplog):
    """The defect itself: shows that the burst below can fail (on pynetdicom 3.0.4)."""
    caplog.set_level(logging.WARNING, logger="pynetdicom")
    answered = send_burst(pacs.port, stock_checkpoint, 20, dimse_timeout_s=1)
    assert not all(answered)
    assert "Received unexpected C-STORE service message" in caplog.text


def test_the_fixed_hand_shake_loses_no_response(pacs, caplog):
    caplog.set_level(logging.WARNING, logger="pynetdicom")
    answered = send_burst(pacs.port, _SlowResumingCheckpoint, 50, dimse_timeout_s=5)
    assert all(answered) and len(pacs.received) == 50
    assert "unexpected" not in caplog.text and "DIMSE timeout" not in caplog.text


def _checkpoint_then_preempt(event: evt.Event) -> None:
    reactor.install_checkpoint(event)
    _preempt_after_sending(event)


def test_report_sender_uses_the_fixed_hand_shake(pacs, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="pynetdicom")
    monkeypatch.setattr(reactor, "ReactorCheckpoint", _SlowResumingCheckpoint)
    monkeypatch.setattr(scu, "CHECKPOINT_HANDLER", (evt.EVT_CONN_OPEN, _checkpoint_then_preempt))
    sender = ReportSender("ECG2AGE", TIMEOUTS.model_copy(update={"dimse_timeout_s": 5}))
    for _ in range(3):  # bursts, one association each
        results = sender(pacs.destination, reports(tmp_path, 15))
        assert {r.outcome for r in results} == {Outcome.DELIVERED}
    assert len(pacs.received) == 45
    assert "unexpected" not in caplog.text and "DIMSE timeout" not in caplog.text
