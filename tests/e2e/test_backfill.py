"""``backfill`` against a real PACS: Orthanc holds ECGs and other instances; the service
scores every ECG once and files its reports back into Orthanc's studies; a killed backfill
resumes without losing or duplicating anything; windows and the rate limit hold; C-GET works
as C-MOVE does."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ComprehensiveSRStorage, EncapsulatedPDFStorage
from sqlalchemy import func, select

from ecg2age_dicom.store.models import (
    AuditEvent,
    BackfillItem,
    BackfillState,
    Prediction,
    ReceivedInstance,
)
from ecg2age_dicom.waveform import REQUIRED_LEADS
from tests.ecg_factory import make_ecg
from tests.peers import CLI, ROOT, Orthanc, free_port, storescu, wait_for

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

CT = Path(str(get_testdata_file("CT_small.dcm")))


@dataclass
class Archive:
    """Orthanc as the archive (and the service's PACS), and what it holds."""

    orthanc: Orthanc
    ecg_studies: dict[str, str]  # SOP Instance UID of each ECG -> its study
    noise_uid: str  # an ECG the quality gate refuses
    held_uid: str  # an ECG the service received before the backfill


def source_config(retrieve: str, backfill: str) -> str:
    return f"""
[[sources]]
name = "ARCHIVE"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {{orthanc_port}}
retrieve = "{retrieve}"
[backfill]
stall_timeout_s = 60
{backfill}
"""


@pytest.fixture
def archive_service(make_service, processes, tmp_path) -> Callable[..., tuple]:
    """A service whose PACS and source are one Orthanc, holding ``count`` ECGs of two dates,
    a noise ECG, an ECG the service already has, a CT and an ECG study's CT series."""

    def make(count: int = 6, retrieve: str = "move", backfill: str = "max_per_minute = 6000"):
        files = tmp_path / "archive-files"
        files.mkdir(exist_ok=True)
        dicom_port = free_port()
        service = make_service(
            pacs_port=dicom_port,
            extra=source_config(retrieve, backfill).replace("{orthanc_port}", str(dicom_port)),
        )
        orthanc = Orthanc.start(
            processes,
            tmp_path / "orthanc",
            "ORTHANC",
            modalities={"ECG2AGE": ("ECG2AGE", "127.0.0.1", service.port)},
            dicom_port=dicom_port,
        )
        studies = {}
        for index in range(count):
            ecg = make_ecg(fs=500)
            ecg.dataset.StudyDate = "20240110" if index % 2 else "20240220"
            orthanc.upload(ecg.write(files / f"ecg{index}.dcm"))
            studies[str(ecg.dataset.SOPInstanceUID)] = str(ecg.dataset.StudyInstanceUID)
        noise = make_ecg(
            signal=np.random.default_rng(7).uniform(-60, 60, (5000, 12)), leads=REQUIRED_LEADS
        )
        orthanc.upload(noise.write(files / "noise.dcm"))
        held = make_ecg()
        orthanc.upload(held.write(files / "held.dcm"))
        orthanc.upload(CT)
        ct_in_ecg_study = files / "ct-in-ecg-study.dcm"
        ct = pydicom.dcmread(CT)
        ct.StudyInstanceUID = next(iter(studies.values()))
        ct.SOPInstanceUID = ct.SOPInstanceUID + ".1"
        ct.save_as(ct_in_ecg_study)
        orthanc.upload(ct_in_ecg_study)
        service.start()
        assert storescu(service.port, [files / "held.dcm"]).returncode == 0
        wait_for(lambda: scored(service) == 1, 120, "the held ECG scored")
        archive = Archive(
            orthanc,
            studies,
            str(noise.dataset.SOPInstanceUID),
            str(held.dataset.SOPInstanceUID),
        )
        return service, archive

    return make


def audited(service) -> list[str]:
    with service.session() as session:
        return list(session.scalars(select(AuditEvent.action)))


def scored(service) -> int:
    with service.session() as session:
        return session.scalar(select(func.count()).select_from(Prediction)) or 0


def command(service, *args: str) -> list[str]:
    """``ecg2age-dicom --config (the service's) ARGS...``."""
    return [str(CLI), "--config", str(service.folder / "ecg2age.toml"), *args]


def backfill(service, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(service, "backfill", "--source", "ARCHIVE", *args),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_backfill(service, processes, *args: str) -> subprocess.Popen:
    return processes.start(
        command(service, "backfill", "--source", "ARCHIVE", *args),
        service.folder / "backfill.log",
    )


def items(service) -> dict[str, BackfillItem]:
    with service.session() as session:
        return {item.sop_instance_uid: item for item in session.scalars(select(BackfillItem))}


def reports_in_orthanc(archive: Archive) -> dict[str, list[str]]:
    """The SOP classes of every report object in Orthanc, by study."""
    found: dict[str, list[str]] = {}
    for tags in archive.orthanc.tags():
        if tags["SOPClassUID"] in (ComprehensiveSRStorage, EncapsulatedPDFStorage):
            found.setdefault(tags["StudyInstanceUID"], []).append(tags["SOPClassUID"])
    return found


def assert_each_ecg_scored_once(service, archive: Archive) -> None:
    with service.session() as session:
        uids = list(session.scalars(select(ReceivedInstance.sop_instance_uid)))
        predictions = session.scalar(select(func.count()).select_from(Prediction))
    assert sorted(uids) == sorted([*archive.ecg_studies, archive.noise_uid, archive.held_uid])
    assert predictions == len(archive.ecg_studies) + 1  # the held one too; never the noise
    reports = reports_in_orthanc(archive)
    for study in archive.ecg_studies.values():
        assert sorted(reports[study]) == sorted([ComprehensiveSRStorage, EncapsulatedPDFStorage])
    assert "duplicate sop_instance_uid" not in service.log.read_text()


@pytest.mark.parametrize(
    ("retrieve", "database_url"),
    [("move", "sqlite"), ("get", "sqlite"), ("move", "postgresql")],
    indirect=["database_url"],
)
def test_backfill_scores_every_ecg_once_and_files_the_reports_in_the_pacs(
    archive_service, retrieve
):
    service, archive = archive_service(retrieve=retrieve)
    dry = backfill(service, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "8 ECG instances, 1 already held here, 7 to retrieve" in dry.stdout
    assert not items(service)  # a dry run writes nothing

    done = backfill(service)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout
    assert "found                 8" in lines and "retrieved             7  by this run" in lines
    assert "scored                6" in lines and "already done          1" in lines
    assert "refused               1" in lines and "no QRS rhythm" in lines
    wait_for(
        lambda: len(reports_in_orthanc(archive)) == len(archive.ecg_studies) + 1,
        120,
        "every report delivered to Orthanc",
    )
    assert_each_ecg_scored_once(service, archive)
    state = items(service)
    assert state[archive.held_uid].state is BackfillState.ALREADY_DONE
    assert state[archive.noise_uid].state is BackfillState.REFUSED

    again = backfill(service)
    assert again.returncode == 0 and "retrieved             0  by this run" in again.stdout
    results = subprocess.run(
        command(service, "results", "--format", "json"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    origins = {row["sop_instance_uid"]: row["backfilled_from"] for row in json.loads(results)}
    assert origins[archive.held_uid] is None
    assert {origins[uid] for uid in archive.ecg_studies} == {"ARCHIVE"}
    assert service.stop() == 0


@SQLITE
def test_a_date_range_retrieves_only_its_studies(archive_service):
    service, _ = archive_service(count=4)
    done = backfill(service, "--since", "2024-01-01", "--until", "2024-01-31")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    # two of the four ECGs, the noise and the held one are of January; two are of February
    assert "found                 4" in done.stdout
    assert {item.study_date for item in items(service).values()} == {"20240110", "20240102"}


@SQLITE
def test_kill_9_in_the_middle_then_a_second_backfill_loses_and_duplicates_nothing(
    archive_service, processes
):
    service, archive = archive_service(count=10, backfill="max_per_minute = 60")
    first = start_backfill(service, processes)
    wait_for(
        lambda: sum(i.state is not BackfillState.PENDING for i in items(service).values()) >= 3,
        120,
        "a few retrievals",
    )
    first.kill()
    first.wait(timeout=30)
    assert any(i.state is BackfillState.PENDING for i in items(service).values())
    config = service.folder / "ecg2age.toml"
    config.write_text(
        config.read_text().replace("max_per_minute = 60\n", "max_per_minute = 6000\n")
    )
    done = backfill(service)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    wait_for(
        lambda: len(reports_in_orthanc(archive)) == len(archive.ecg_studies) + 1,
        120,
        "every report delivered to Orthanc",
    )
    assert_each_ecg_scored_once(service, archive)
    with service.session() as session:
        backfilled = session.scalar(
            select(func.count()).where(BackfillItem.state == BackfillState.SCORED)
        )
    assert backfilled == len(archive.ecg_studies)


@SQLITE
def test_the_rate_limit_spaces_the_retrievals(archive_service):
    service, archive = archive_service(count=6, backfill="max_per_minute = 60\nmax_concurrent = 3")
    done = backfill(service)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    with service.session() as session:
        arrivals = sorted(
            session.scalars(
                select(ReceivedInstance.received_at).where(
                    ReceivedInstance.sop_instance_uid != archive.held_uid
                )
            )
        )
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) == 7 and min(gaps) >= 0.9  # 1 s apart at 60 a minute


@SQLITE
def test_outside_its_windows_the_backfill_waits_and_stops_cleanly(archive_service, processes):
    later = datetime.now() + timedelta(hours=3)
    window = f"{later:%H:%M}-{later + timedelta(hours=1):%H:%M}"
    service, _ = archive_service(count=2, backfill=f'windows = ["{window}"]\nmax_per_minute = 6000')
    waiting = start_backfill(service, processes)
    log = service.folder / "backfill.log"
    wait_for(lambda: "backfill_start" in audited(service), 60, "the backfill to start")
    time.sleep(8)  # long enough to have listed and retrieved everything inside a window
    assert waiting.poll() is None
    assert not items(service)  # not even queried outside the window
    waiting.send_signal(signal.SIGTERM)
    assert waiting.wait(timeout=60) == 1
    assert "stopped: interrupted" in log.read_text()
    with service.session() as session:
        assert session.scalar(select(func.count()).select_from(ReceivedInstance)) == 1
