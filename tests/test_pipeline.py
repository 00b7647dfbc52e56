"""Spooled files -> predictions, SR files and delivery rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from ecg2age_dicom.config import Destination
from ecg2age_dicom.pipeline import Pipeline, Spool
from ecg2age_dicom.store import queries
from ecg2age_dicom.store.models import Delivery, InstanceStatus, Prediction, ReceivedInstance
from tests.ecg_factory import make_ecg

SAMPLE = Path(get_testdata_file("waveform_ecg.dcm"))
DESTINATIONS = [
    Destination(name="PACS", ae_title="PACS", host="127.0.0.1", port=11113),
    Destination(name="CART-BACK", ae_title="CART7", host="127.0.0.1", port=11114),
]


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    files = {"sample": folder / "sample.dcm"}
    shutil.copy(SAMPLE, files["sample"])
    for name, built in {
        "muse8": make_ecg(leads=("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"), fs=250),
        "no_age": make_ecg(patient_age=None),
        "short": make_ecg(seconds=3.0),
        "no_v3": make_ecg(leads=("I", "II", "V1", "V2", "V4", "V5", "V6")),
    }.items():
        files[name] = built.write(folder / f"{name}.dcm")
    return files


def make_pipeline(store, tiny_runtime, tmp_path, **options) -> Pipeline:
    _, sessions = store
    return Pipeline(
        sessions,
        tiny_runtime,
        Spool(tmp_path / "spool"),
        send_to=["PACS", "@sender"],
        destinations=DESTINATIONS,
        batch_size=2,
        **options,
    )


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_files_come_out_as_reports_with_every_outcome_stored(store, tiny_runtime, tmp_path, inputs):
    pipeline = make_pipeline(store, tiny_runtime, tmp_path)
    for path in inputs.values():
        assert pipeline.ingest_file(path, calling_ae_title="CART7", peer="127.0.0.1")
    assert not pipeline.ingest_file(inputs["sample"], calling_ae_title="CART7")  # duplicate
    assert pipeline.run_until_idle() == 5
    assert pipeline.run_once() == 0

    _, sessions = store
    with sessions() as session:
        rows = {row.sop_instance_uid: row for row in queries.results(session)}
        deliveries = session.scalars(select(Delivery)).all()
    for name in ("sample", "muse8", "no_age"):
        row = rows[uid_of(inputs[name])]
        assert row.status == "predicted" and row.error is None
        assert row.model_name == "Tiny" and row.predicted_age_years is not None
        report = pydicom.dcmread(tmp_path / "spool" / "sr" / f"{row.sr_sop_instance_uid}.dcm")
        assert report.StudyInstanceUID == row.study_instance_uid
        evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
        assert (
            evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            == row.sop_instance_uid
        )
    sample_row = rows[uid_of(inputs["sample"])]
    assert sample_row.chronological_age_years == 42.0
    assert sample_row.age_gap_years == pytest.approx(
        sample_row.predicted_age_years - 42.0, abs=0.02
    )
    assert rows[uid_of(inputs["no_age"])].age_gap_years is None
    for name, reason in (("short", "3.00 s long"), ("no_v3", "V3 missing")):
        row = rows[uid_of(inputs[name])]
        assert row.status == "failed" and reason in row.error and row.sr_sop_instance_uid is None
        assert (tmp_path / "spool" / "quarantine" / f"{row.sop_instance_uid}.dcm").exists()
    # One delivery per destination; "@sender" resolved from the calling AE title.
    assert len(deliveries) == 6
    assert {d.destination for d in deliveries} == {"PACS", "CART-BACK"}


def test_restart_in_the_middle_loses_and_duplicates_nothing(store, tiny_runtime, tmp_path, inputs):
    _, sessions = store
    first = make_pipeline(store, tiny_runtime, tmp_path, worker_id="crashed")
    for path in inputs.values():
        first.ingest_file(path)
    # The first worker claims a batch and dies before finishing it.
    with sessions.begin() as session:
        assert len(queries.claim_received(session, "crashed", 2)) == 2
    restarted = make_pipeline(
        store, tiny_runtime, tmp_path, worker_id="new", claim_timeout=timedelta(seconds=-1)
    )
    assert restarted.run_until_idle() == 3  # the unclaimed ones
    assert restarted.resume() == 2  # the dead worker's claims come back
    assert restarted.run_until_idle() == 2

    # A row that already has this model's prediction is never predicted again.
    with sessions.begin() as session:
        predicted = session.scalars(
            select(ReceivedInstance).where(ReceivedInstance.status == InstanceStatus.PREDICTED)
        ).first()
        predicted.status = InstanceStatus.RECEIVED
    assert restarted.run_until_idle() == 1
    with sessions() as session:
        statuses = session.scalars(select(ReceivedInstance.status)).all()
        assert sorted(s.value for s in statuses) == ["failed"] * 2 + ["predicted"] * 3
        per_instance = session.execute(
            select(Prediction.instance_id, func.count()).group_by(Prediction.instance_id)
        ).all()
        assert len(per_instance) == 3 and all(count == 1 for _, count in per_instance)
    reports = list((tmp_path / "spool" / "sr").glob("*.dcm"))
    assert len(reports) == 3


def test_a_spool_file_gone_missing_is_a_recorded_failure(store, tiny_runtime, tmp_path, inputs):
    pipeline = make_pipeline(store, tiny_runtime, tmp_path)
    pipeline.ingest_file(inputs["sample"])
    pipeline.spool.received_path(uid_of(inputs["sample"])).unlink()
    pipeline.run_until_idle()
    _, sessions = store
    with sessions() as session:
        (row,) = queries.results(session)
    assert row.status == "failed" and "cannot read" in row.error
