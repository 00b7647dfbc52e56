"""The service on a hospital network: hostile senders, bad writers, a hung PACS, bursts."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pydicom.config
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import TwelveLeadECGWaveformStorage
from sqlalchemy import select

from ecg2age_dicom.store.models import Delivery, ReceivedInstance
from tests.e2e.test_service import burst, predictions, started_with_pacs
from tests.ecg_factory import make_ecg
from tests.peers import DCMTK_ENV, echoscu, storescu, wait_for


def send(port: int, dataset) -> int | None:
    """C-STORE ``dataset`` with pynetdicom (which sends what DCMTK would refuse to);
    returns the status, or None without an association."""
    ae = AE(ae_title="CART1")
    ae.add_requested_context(TwelveLeadECGWaveformStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="ECG2AGE")
    if not assoc.is_established:
        return None
    status = assoc.send_c_store(dataset)
    assoc.release()
    return int(status.Status) if "Status" in status else None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_hostile_uids_are_refused_and_nothing_leaves_the_spool(make_service, tmp_path):
    service = make_service()
    service.start()
    escape = Path("/tmp") / f"ecg2age-e2e-{service.port}"
    for uid in (f"../../../../..{escape}", str(escape), "1.2.3\nINFO forged line", "1.2.abc.4"):
        ecg = make_ecg().dataset
        ecg.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        with pydicom.config.disable_value_validation():
            ecg.SOPInstanceUID = uid
            ecg.file_meta.MediaStorageSOPInstanceUID = uid
            assert send(service.port, ecg) == 0xA900
    assert not Path(f"{escape}.dcm").exists()
    with service.session() as session:
        assert session.scalars(select(ReceivedInstance)).all() == []
    log = service.log.read_text()
    assert "\nINFO forged line" not in log and "refused mismatch" in log


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_called_ae_title_must_be_ours(make_service):
    service = make_service()
    service.start()
    wrong = subprocess.run(
        ["echoscu", "-aet", "GOOD", "-aec", "WRONG", "127.0.0.1", str(service.port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=DCMTK_ENV,
        check=False,
    )
    assert wrong.returncode != 0 and "reject" in (wrong.stdout + wrong.stderr).lower()
    assert echoscu(service.port, calling="GOOD").returncode == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_carts_odd_values_give_a_valid_sr_and_no_phi_in_the_log(
    make_service, processes, tmp_path
):
    service, pacs = started_with_pacs(make_service, processes, tmp_path)
    ecg = make_ecg(patient_age=None)
    dataset = ecg.dataset
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.PatientName = "Müller^Jürgen"
    dataset.PatientID = "PHI-7781"
    dataset.StudyDescription = "ECG:Sinus Rhythm\r\nNormal ECG\r\n"
    with pydicom.config.disable_value_validation():
        dataset.PatientBirthDate = "1970-01-01"
        path = ecg.write(tmp_path / "odd.dcm")
    assert storescu(service.port, [path]).returncode == 0
    wait_for(lambda: len(list(pacs.glob("SR*"))) == 1, 60, "the SR")
    (received,) = pacs.glob("SR*")
    report = pydicom.dcmread(received)
    assert str(report.PatientName) == "Müller^Jürgen"
    assert report.PatientBirthDate == "19700101"
    assert report.StudyDescription == "ECG:Sinus Rhythm Normal ECG"
    verify = subprocess.run(["dciodvfy", str(received)], capture_output=True, text=True, timeout=60)
    assert [line for line in verify.stderr.splitlines() if line.startswith("Error")] == []
    assert service.stop() == 0
    log = service.log.read_text()
    for phi in ("1970-01-01", "19700101", "Müller", "Jürgen", "PHI-7781"):
        assert phi not in log


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_instance_over_the_size_limit_is_cut_off_and_leaves_nothing(make_service, tmp_path):
    service = make_service(extra="")
    config = service.folder / "ecg2age.toml"
    config.write_text(
        config.read_text().replace("[listener]\n", "[listener]\nmax_instance_bytes = 1000000\n")
    )
    service.start()
    big = make_ecg(fs=1000, seconds=60.0).write(tmp_path / "big.dcm")  # 1.4 MB
    assert big.stat().st_size > 1_000_000
    assert storescu(service.port, [big]).returncode != 0
    assert echoscu(service.port).returncode == 0
    incoming = next((service.folder / "spool" / "incoming").iterdir())
    wait_for(lambda: list(incoming.iterdir()) == [], 30, "the partial file to be removed")
    assert "dataset over 1000000 bytes" in service.log.read_text()


class HungPACS:
    """Accepts TCP connections and never answers; remembers when each arrived."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.accepted: list[float] = []
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            self.connections.append(connection)

    def close(self) -> None:
        self.sock.close()
        for connection in self.connections:
            connection.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sigterm_stops_at_once_while_a_pacs_hangs(make_service, tmp_path):
    # SCU timeouts far above the wait below: only aborting the sends ends them in time.
    service = make_service(
        extra="acse_timeout_s = 120\ndimse_timeout_s = 120\nnetwork_timeout_s = 120\n"
    )
    hung = HungPACS(service.pacs_port)
    try:
        service.start()
        assert storescu(service.port, burst(tmp_path / "burst", 6)).returncode == 0
        wait_for(lambda: predictions(service) == 6, 120, "the predictions")
        wait_for(lambda: hung.accepted, 30, "a delivery to start")
        stopped_at = time.monotonic()
        service.process.send_signal(15)
        assert service.process.wait(timeout=20) == 0
        assert [t for t in hung.accepted if t > stopped_at + 1] == []  # none started later
    finally:
        hung.close()
    with service.session() as session:
        deliveries = session.scalars(select(Delivery)).all()
    # six ECGs, an SR and a PDF each: none delivered, none given up
    assert len(deliveries) == 12 and {d.status.value for d in deliveries} <= {"pending", "sending"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_bursts_of_deliveries_lose_no_response(make_service, processes, tmp_path):
    service, pacs = started_with_pacs(make_service, processes, tmp_path)
    for round_ in range(2):
        files = burst(tmp_path / f"burst{round_}", 100)
        assert storescu(service.port, files).returncode == 0
    wait_for(lambda: len(list(pacs.glob("SR*"))) == 200, 300, "200 SRs at the PACS")
    assert service.stop() == 0
    log = service.log.read_text()
    assert "unexpected" not in log and "DIMSE timeout" not in log
