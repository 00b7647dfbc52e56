"""The product as a PACS administrator meets it: DCMTK sends ECGs, DCMTK receives the SRs."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import EncapsulatedPDFStorage
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy import func, select

from ecg2age_dicom.store import queries
from ecg2age_dicom.store.models import Delivery, Prediction, ReceivedInstance
from tests.ecg_factory import make_ecg
from tests.peers import echoscu, running, start_storescp, storescu, wait_for

SAMPLE = Path(get_testdata_file("waveform_ecg.dcm"))


def burst(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        make_ecg(fs=500 if i % 2 else 1000, seconds=10.0).write(folder / f"ecg{i:03d}.dcm")
        for i in range(count)
    ]


def referenced_ecgs(folder: Path) -> list[str]:
    """The ECG SOP Instance UID each SR received by storescp refers to."""
    uids = []
    for path in folder.glob("SR*"):
        report = pydicom.dcmread(path)
        evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
        uids.append(
            evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        )
    return uids


def started_with_pacs(make_service, processes, tmp_path: Path):
    """A started service with the default settings, and the folder its PACS stores into."""
    service = make_service()
    pacs = tmp_path / "pacs"
    start_storescp(processes, service.pacs_port, pacs)
    service.start()
    return service, pacs


def statuses(service) -> dict[str, str]:
    with service.session() as session:
        return {
            uid: status.value
            for uid, status in session.execute(
                select(ReceivedInstance.sop_instance_uid, ReceivedInstance.status)
            )
        }


def predictions(service) -> int:
    with service.session() as session:
        return session.scalar(select(func.count()).select_from(Prediction))


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_sample_and_a_burst_of_50_come_back_as_srs(make_service, processes, tmp_path):
    service, pacs = started_with_pacs(make_service, processes, tmp_path)
    files = [SAMPLE, *burst(tmp_path / "burst", 50)]
    sent = storescu(service.port, files)
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: len(list(pacs.glob("SR*"))) >= 51, 180, "51 SRs at the PACS")
    expected = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert sorted(referenced_ecgs(pacs)) == sorted(expected)
    sample_sr = next(
        pydicom.dcmread(p) for p in pacs.glob("SR*") if pydicom.dcmread(p).PatientID == "642341"
    )
    assert sample_sr.StudyInstanceUID == pydicom.dcmread(SAMPLE).StudyInstanceUID
    # [report] outputs = ["sr", "pdf"] by default: a PDF report for every ECG too.
    wait_for(lambda: len(list(pacs.iterdir())) >= 102, 120, "51 PDFs at the PACS")
    documents = [pydicom.dcmread(p) for p in pacs.iterdir() if not p.name.startswith("SR")]
    assert {str(d.SOPClassUID) for d in documents} == {EncapsulatedPDFStorage}
    assert sorted(d.SourceInstanceSequence[0].ReferencedSOPInstanceUID for d in documents) == (
        sorted(expected)
    )
    assert all(d.EncapsulatedDocument.startswith(b"%PDF") for d in documents)
    with service.session() as session:
        assert {row.status for row in queries.results(session, limit=100)} == {"delivered"}
    assert service.stop() == 0
    log = service.log.read_text()
    assert "not validated for clinical use" in log
    for phi in ("Anonymous", "642341", "19710123"):  # the sample's name, ID, birth date
        assert phi not in log


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_bad_input_gets_a_failure_status_and_the_listener_keeps_serving(make_service, tmp_path):
    service = make_service()
    service.start()
    bad = make_ecg(seconds=3.0).write(tmp_path / "short.dcm")
    sent = storescu(service.port, [bad], extra=("-v",))
    assert sent.returncode != 0
    assert "error: cannotunderstand" in (sent.stdout + sent.stderr).lower()  # 0xC000
    assert echoscu(service.port).returncode == 0
    uid = str(pydicom.dcmread(bad).SOPInstanceUID)
    with service.session() as session:
        row = session.scalars(select(ReceivedInstance)).one()
    assert row.sop_instance_uid == uid and row.status.value == "failed"
    assert "3.00 s long" in row.error
    assert Path(row.spool_path).exists() and "quarantine" in row.spool_path


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_destination_down_then_up(make_service, processes, tmp_path):
    service = make_service()
    service.start()
    assert storescu(service.port, [SAMPLE]).returncode == 0
    wait_for(lambda: predictions(service) == 1, 60, "the prediction")
    time.sleep(2)  # a few delivery attempts fail: nobody listens at the PACS port
    assert statuses(service) == {pydicom.dcmread(SAMPLE).SOPInstanceUID: "predicted"}
    pacs = tmp_path / "pacs"
    start_storescp(processes, service.pacs_port, pacs)
    wait_for(lambda: len(list(pacs.iterdir())) == 2, 60, "the SR and the PDF after retries")

    def delivered() -> bool:
        with service.session() as session:
            deliveries = session.scalars(select(Delivery)).all()  # the SR's and the PDF's
            return len(deliveries) == 2 and all(
                d.status.value == "delivered" and d.attempts > 1 for d in deliveries
            )

    wait_for(delivered, 30, "the delivery rows to say delivered after several attempts")


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_kill_9_mid_burst_loses_and_duplicates_nothing(make_service, processes, tmp_path):
    service, pacs = started_with_pacs(make_service, processes, tmp_path)
    files = burst(tmp_path / "burst", 40)
    sender = threading.Thread(target=storescu, args=(service.port, files))
    sender.start()
    wait_for(lambda: len(statuses(service)) >= 10, 120, "the first ECGs to be accepted")
    orphans = service.kill9()
    assert orphans, "the service runs its pipeline in worker processes"
    # A worker finishes the batch in hand and stops when its service is gone.
    wait_for(
        lambda: not any(running(pid) for pid in orphans),
        120,
        "the worker processes of the killed service to stop",
    )
    sender.join(timeout=300)
    accepted = set(statuses(service))
    assert 10 <= len(accepted) <= 40
    service.start()
    wait_for(lambda: len(list(pacs.glob("SR*"))) >= len(accepted), 180, "every accepted ECG's SR")
    time.sleep(2)  # nothing more may arrive
    srs = referenced_ecgs(pacs)
    assert sorted(srs) == sorted(accepted)  # each accepted ECG exactly once
    assert predictions(service) == len(accepted)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_killed_worker_process_is_started_again(make_service, processes, tmp_path):
    service, pacs = started_with_pacs(make_service, processes, tmp_path)
    (worker,) = service.workers()
    os.kill(worker, signal.SIGKILL)
    wait_for(
        lambda: b"exited with code -9; starting it again" in service.log.read_bytes(),
        30,
        "the service to notice",
    )
    wait_for(lambda: service.workers() not in ([], [worker]), 180, "a new worker process")
    storescu(service.port, burst(tmp_path / "after", 5))
    wait_for(lambda: len(list(pacs.glob("SR*"))) == 5, 120, "the SRs made by the new worker")
    assert service.stop() == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_duplicate_send_gives_one_prediction(make_service, processes, tmp_path):
    service, pacs = started_with_pacs(make_service, processes, tmp_path)
    assert storescu(service.port, [SAMPLE]).returncode == 0
    wait_for(lambda: len(list(pacs.glob("SR*"))) == 1, 60, "the SR")
    again = storescu(service.port, [SAMPLE])
    assert again.returncode == 0 and "0xc000" not in again.stdout.lower()
    time.sleep(2)
    assert len(list(pacs.glob("SR*"))) == 1
    assert predictions(service) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_calling_ae_title_not_allowed_is_rejected(make_service):
    service = make_service(allowed=("CART1",))
    service.start()
    assert echoscu(service.port, calling="CART1").returncode == 0
    refused = echoscu(service.port, calling="INTRUDER")
    assert refused.returncode != 0
    assert "reject" in (refused.stdout + refused.stderr).lower()


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_tls_association(make_service, tmp_path):
    key, cert = tmp_path / "server.key", tmp_path / "server.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    service = make_service(tls=f'[listener.tls]\ncert = "{cert}"\nkey = "{key}"\n')
    service.start()
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    ae = AE(ae_title="CART1")
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1", service.port, ae_title="ECG2AGE", tls_args=(context, "localhost")
    )
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    plain = echoscu(service.port)  # no TLS: no association
    assert plain.returncode != 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_processes_share_one_postgresql_work_queue(make_service, processes, tmp_path):
    first = make_service(name="first")
    second = make_service(name="second", pacs_port=first.pacs_port)
    pacs = tmp_path / "pacs"
    start_storescp(processes, first.pacs_port, pacs)
    first.start()
    second.start()
    files = burst(tmp_path / "burst", 60)
    sent = [
        threading.Thread(target=storescu, args=(service.port, files[i::2]))
        for i, service in enumerate((first, second))
    ]
    for thread in sent:
        thread.start()
    for thread in sent:
        thread.join(timeout=300)
    wait_for(lambda: len(list(pacs.glob("SR*"))) >= 60, 240, "60 SRs")
    time.sleep(2)
    assert sorted(referenced_ecgs(pacs)) == sorted(
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files
    )
    assert predictions(first) == 60
    for service in (first, second):  # both took work from the shared queue
        assert service.log.read_text().count("ecg predicted") > 0
