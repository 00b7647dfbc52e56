"""Spooled files -> predictions, SR files and delivery rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

from ecg2age_dicom import sr
from ecg2age_dicom.model import ModelRuntime
from ecg2age_dicom.pipeline import Pipeline
from ecg2age_dicom.receive import ReceiveOutcome, Receiver
from ecg2age_dicom.spool import Spool
from ecg2age_dicom.store import queries
from ecg2age_dicom.store.models import (
    Delivery,
    InstanceStatus,
    Prediction,
    ReceivedInstance,
    Report,
)
from tests.ecg_factory import make_ecg
from tests.model_factory import tiny_model, write_card
from tests.receive_factory import receive

SAMPLE = Path(get_testdata_file("waveform_ecg.dcm"))


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    files = {"sample": folder / "sample.dcm"}
    shutil.copy(SAMPLE, files["sample"])
    for name, built in {
        "muse8": make_ecg(leads=("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"), fs=250),
        "no_age": make_ecg(patient_age=None),
    }.items():
        files[name] = built.write(folder / f"{name}.dcm")
    return files


def make_pipeline(store, tiny_runtime, tmp_path, **options) -> Pipeline:
    _, sessions = store
    return Pipeline(
        sessions,
        tiny_runtime,
        Spool(tmp_path / "spool"),
        ["PACS", "@sender"],
        batch_size=2,
        **options,
    )


def receiver(store, tmp_path) -> Receiver:
    _, sessions = store
    return Receiver(sessions, Spool(tmp_path / "spool"), max_bytes=10_000_000)


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_received_files_come_out_as_reports(store, tiny_runtime, tmp_path, inputs):
    pipeline = make_pipeline(store, tiny_runtime, tmp_path)
    spooled = receiver(store, tmp_path)
    for path in inputs.values():
        assert receive(spooled, path).outcome is ReceiveOutcome.STORED
    assert receive(spooled, inputs["sample"]).outcome is ReceiveOutcome.DUPLICATE
    assert pipeline.run_until_idle() == 3
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
    assert sample_row.age_gap_years == round(sample_row.predicted_age_years - 42.0, 2)
    assert rows[uid_of(inputs["no_age"])].age_gap_years is None
    # One delivery per destination name; "@sender" is resolved when delivered.
    assert len(deliveries) == 6
    assert {d.destination for d in deliveries} == {"PACS", "@sender"}


def spool_directly(store, tmp_path, ecg, name: str) -> str:
    """Put a file and a "received" row in place without the receiver's checks (a file from
    an older version, or one changed on disk)."""
    _, sessions = store
    path = tmp_path / "spool" / "received" / f"{name}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ecg.write(path)
    dataset = ecg.dataset
    instance = queries.NewInstance(
        str(dataset.SOPInstanceUID), "", "", str(dataset.SOPClassUID), str(path)
    )
    with sessions.begin() as session:
        queries.record_received(session.connection(), instance)
    return str(dataset.SOPInstanceUID)


def test_a_poison_ecg_fails_alone_and_its_batch_goes_on(store, tiny_runtime, tmp_path, inputs):
    pipeline = make_pipeline(store, tiny_runtime, tmp_path)
    pipeline.batch_size = 8
    spooled = receiver(store, tmp_path)
    for path in inputs.values():
        receive(spooled, path)
    no_study = make_ecg()
    del no_study.dataset.StudyInstanceUID
    flat = make_ecg(signal=np.zeros((5000, 12)))
    poisons = {
        spool_directly(store, tmp_path, no_study, "no_study"): "Study Instance UID",
        spool_directly(store, tmp_path, flat, "flat"): "flat, disconnected or clipped",
    }
    assert pipeline.run_once() == 5  # one batch: three good ECGs and two poisons
    _, sessions = store
    with sessions() as session:
        rows = {row.sop_instance_uid: row for row in queries.results(session)}
    assert sorted(row.status for row in rows.values()) == ["failed"] * 2 + ["predicted"] * 3
    for uid, reason in poisons.items():
        assert rows[uid].status == "failed" and reason in rows[uid].error
        assert (tmp_path / "spool" / "quarantine" / f"{uid}.dcm").exists()


def test_a_report_that_cannot_be_made_fails_that_ecg_only(
    store, tiny_runtime, tmp_path, inputs, monkeypatch, caplog
):
    pipeline = make_pipeline(store, tiny_runtime, tmp_path)
    pipeline.batch_size = 8
    spooled = receiver(store, tmp_path)
    for path in inputs.values():
        receive(spooled, path)
    bad = uid_of(inputs["muse8"])
    real_build = sr.build_report

    def build(header, *args, **kwargs):
        if header.SOPInstanceUID == bad:
            raise AttributeError("highdicom could not build it")
        return real_build(header, *args, **kwargs)

    monkeypatch.setattr(sr, "build_report", build)
    assert pipeline.run_once() == 3
    _, sessions = store
    with sessions() as session:
        rows = {row.sop_instance_uid: row for row in queries.results(session)}
    assert rows[bad].status == "failed" and "AttributeError" in rows[bad].error
    assert [r.status for uid, r in rows.items() if uid != bad] == ["predicted"] * 2
    assert f"ecg failed sop_instance_uid={bad}" in caplog.text


def test_restart_in_the_middle_loses_and_duplicates_nothing(store, tiny_runtime, tmp_path, inputs):
    _, sessions = store
    spooled = receiver(store, tmp_path)
    for path in inputs.values():
        receive(spooled, path)
    # The first worker claims a batch and dies before finishing it.
    with sessions.begin() as session:
        assert len(queries.claim_received(session, "crashed", 2)) == 2
    restarted = make_pipeline(
        store, tiny_runtime, tmp_path, worker_id="new", claim_timeout=timedelta(seconds=-1)
    )
    assert restarted.run_until_idle() == 1  # the unclaimed one
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
        assert sorted(s.value for s in statuses) == ["predicted"] * 3
        per_instance = session.execute(
            select(Prediction.instance_id, func.count()).group_by(Prediction.instance_id)
        ).all()
        assert len(per_instance) == 3 and all(count == 1 for _, count in per_instance)
    reports = list((tmp_path / "spool" / "sr").glob("*.dcm"))
    assert len(reports) == 3


def test_a_spool_file_gone_missing_is_a_recorded_failure(store, tiny_runtime, tmp_path, inputs):
    pipeline = make_pipeline(store, tiny_runtime, tmp_path)
    receive(receiver(store, tmp_path), inputs["sample"])
    pipeline.spool.received_path(uid_of(inputs["sample"])).unlink()
    pipeline.run_until_idle()
    _, sessions = store
    with sessions() as session:
        (row,) = queries.results(session)
    assert row.status == "failed" and "cannot read" in row.error


def test_the_corrected_gap_is_stored_where_the_card_defines_a_correction(store, tmp_path, inputs):
    folder = tmp_path / "model"
    folder.mkdir()
    model = tiny_model(folder / "tiny.keras")
    correction = "[age_gap]\nmethod = 'linear'\ncoefficients = [2.0, 0.1]\nfitted_on = 'test'\n"
    runtime = ModelRuntime.load(write_card(folder, model, "[output]\noffset = 50.0\n" + correction))
    receive(receiver(store, tmp_path), inputs["sample"])
    assert make_pipeline(store, runtime, tmp_path).run_until_idle() == 1
    _, sessions = store
    with sessions() as session:
        (row,) = queries.results(session)
    assert row.chronological_age_years == 42.0
    expected = row.predicted_age_years - 42.0 - (2.0 + 0.1 * 42.0)
    assert row.age_gap_corrected_years == pytest.approx(expected, abs=0.01)


def test_a_batch_syncs_its_reports_folder_once_before_its_rows_name_the_files(
    store, tiny_runtime, tmp_path, inputs, monkeypatch
):
    pipeline = make_pipeline(store, tiny_runtime, tmp_path, outputs=("sr", "pdf"))
    spooled = receiver(store, tmp_path)
    receive(spooled, inputs["sample"])
    receive(spooled, inputs["no_age"])
    synced: list[tuple[Path, int]] = []
    _, sessions = store

    def sync_folder(folder: Path) -> None:
        with sessions() as session:  # how many report rows there are at that moment
            synced.append((folder, session.scalar(select(func.count()).select_from(Report))))

    monkeypatch.setattr("ecg2age_dicom.pipeline.sync_folder", sync_folder)
    assert pipeline.run_once() == 2
    assert len(synced) == 1
    folder, rows = synced[0]
    assert folder == tmp_path / "spool" / "sr" and len(list(folder.glob("*.dcm"))) == 4
    assert rows == 0  # no row named a report file before its folder was synced
