"""The results store on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import inspect, select

from ecg2age_dicom.store import make_engine, queries, session_factory, upgrade
from ecg2age_dicom.store.models import (
    DeliveryStatus,
    InstanceStatus,
    ReceivedInstance,
    Report,
)
from tests.store_factory import predicted


def new(uid: str) -> queries.NewInstance:
    return queries.NewInstance(
        sop_instance_uid=uid,
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.9.1.1",
        spool_path=f"/spool/{uid}.dcm",
        calling_ae_title="CART",
    )


def test_migrations_create_every_table(store):
    engine, _ = store
    tables = set(inspect(engine).get_table_names())
    assert {
        "received_instances",
        "predictions",
        "reports",
        "deliveries",
        "alembic_version",
    } <= tables


def test_upgrading_keeps_the_srs_of_a_database_made_before_report_objects(database_url):
    engine = make_engine(database_url)
    upgrade(engine, "0002")
    now = "2026-12-01 10:00:00+00:00"
    with engine.begin() as connection:
        for statement in (
            "INSERT INTO received_instances (id, sop_instance_uid, study_instance_uid, "
            "series_instance_uid, sop_class_uid, calling_ae_title, peer_address, received_at, "
            f"spool_path, status) VALUES (1, '1.1', '1.2', '1.3', '1.4', 'A', 'p', '{now}', "
            "'/x', 'predicted')",
            "INSERT INTO predictions (id, instance_id, model_name, model_version, "
            f"predicted_age_years, created_at) VALUES (1, 1, 'M', '1', 50.0, '{now}')",
            "INSERT INTO reports (id, prediction_id, sr_sop_instance_uid, path, created_at) "
            f"VALUES (1, 1, '9.9', '/sr/9.9.dcm', '{now}')",
            "INSERT INTO deliveries (id, report_id, destination, status, attempts) "
            "VALUES (1, 1, 'PACS', 'delivered', 1)",
        ):
            connection.exec_driver_sql(statement)
    upgrade(engine)
    with session_factory(engine)() as session:
        (row,) = queries.results(session)
        # migration 0008 filled the state the console filters on
        assert session.scalar(select(ReceivedInstance.delivery_state)) == "delivered"
    engine.dispose()
    assert row.sr_sop_instance_uid == "9.9" and row.status == "delivered"
    assert row.reports == [{"kind": "sr", "sop_instance_uid": "9.9", "status": "delivered"}]


def test_sqlite_connections_are_durable_wal_with_busy_timeout_and_foreign_keys(store):
    engine, _ = store
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite pragmas")
    with engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
        }
    # synchronous 2 = FULL: in WAL mode, NORMAL may lose acknowledged commits in a power cut.
    assert pragmas == {
        "journal_mode": "wal",
        "busy_timeout": 30000,
        "foreign_keys": 1,
        "synchronous": 2,
    }


def test_same_uid_twice_is_one_row(store):
    _, sessions = store
    with sessions.begin() as session:
        first, created = queries.record_received(session.connection(), new("1.1"))
        assert created
    with sessions.begin() as session:
        again, created = queries.record_received(session.connection(), new("1.1"))
        assert not created and again == first
    with sessions() as session:
        assert len(session.scalars(select(ReceivedInstance)).all()) == 1


def test_concurrent_claimers_never_take_the_same_row(store):
    _, sessions = store
    with sessions.begin() as session:
        for i in range(300):
            queries.record_received(session.connection(), new(f"2.{i}"))
    claimed: list[list[int]] = []
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        mine: list[int] = []
        try:
            while True:
                with sessions.begin() as session:
                    rows = queries.claim_received(session, name, 7)
                    assert len(rows) <= 7
                    mine += [row.id for row in rows]
                if not rows:
                    break
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)
        claimed.append(mine)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    every = [row_id for mine in claimed for row_id in mine]
    assert len(every) == 300 and len(set(every)) == 300
    assert sum(1 for mine in claimed if mine) > 1  # the work really was shared
    with sessions() as session:
        statuses = set(session.scalars(select(ReceivedInstance.status)))
        assert statuses == {InstanceStatus.PROCESSING}


def test_stale_claims_are_requeued(store):
    _, sessions = store
    with sessions.begin() as session:
        queries.record_received(session.connection(), new("3.1"))
    with sessions.begin() as session:
        assert len(queries.claim_received(session, "dead-worker", 10)) == 1
    with sessions.begin() as session:
        assert queries.requeue_stale_claims(session, timedelta(minutes=5)) == 0
        assert queries.requeue_stale_claims(session, timedelta(seconds=-1)) == 1
    with sessions.begin() as session:
        assert [row.sop_instance_uid for row in queries.claim_received(session, "w", 10)] == ["3.1"]


def test_results_follow_the_row_through_its_states(store):
    _, sessions = store
    with sessions.begin() as session:
        for uid in ("4.1", "4.2"):
            queries.record_received(session.connection(), new(uid))
    with sessions.begin() as session:
        first, second = queries.claim_received(session, "w", 10)
        queries.mark_failed(session, second, "lead V3 missing")
        result = queries.NewResult(
            first.id,
            "M",
            "1",
            61.5,
            50.0,
            11.5,
            ("baseline_wander:V1",),
            [
                queries.NewReport("sr", "9.9.9", "/spool/sr/9.9.9.dcm"),
                queries.NewReport("pdf", "9.9.10", "/spool/sr/9.9.10.dcm"),
            ],
            ["PACS", "ARCHIVE", "PACS"],
        )
        queries.save_results(session, [result])
    with sessions() as session:
        sr_report, pdf_report = session.scalars(select(Report).order_by(Report.id)).all()
        assert (sr_report.kind, pdf_report.kind) == ("sr", "pdf")
        for report in (sr_report, pdf_report):
            assert [d.destination for d in report.deliveries] == ["PACS", "ARCHIVE"]
    with sessions() as session:
        rows = {row.sop_instance_uid: row for row in queries.results(session)}
    assert rows["4.2"].status == "failed" and rows["4.2"].error == "lead V3 missing"
    assert rows["4.1"].status == "predicted" and rows["4.1"].sr_sop_instance_uid == "9.9.9"
    assert (rows["4.1"].predicted_age_years, rows["4.1"].age_gap_years) == (61.5, 11.5)
    assert rows["4.1"].quality_flags == ["baseline_wander:V1"] and rows["4.2"].quality_flags is None

    def set_status(kind: str, status: DeliveryStatus, which: slice = slice(None)) -> None:
        with sessions.begin() as session:
            report = session.scalars(select(Report).where(Report.kind == kind)).one()
            for delivery in report.deliveries[which]:
                delivery.status = status

    def row_of(status: str | None = None):
        with sessions() as session:
            return {row.sop_instance_uid: row for row in queries.results(session, status)}

    set_status("sr", DeliveryStatus.DELIVERED)  # the SR everywhere, the PDF still pending
    row = row_of("predicted")["4.1"]
    assert row.reports == [
        {"kind": "sr", "sop_instance_uid": "9.9.9", "status": "delivered"},
        {"kind": "pdf", "sop_instance_uid": "9.9.10", "status": "predicted"},
    ]
    set_status("pdf", DeliveryStatus.DELIVERED, slice(0, 1))
    assert "4.1" in row_of("predicted")
    set_status("pdf", DeliveryStatus.DELIVERED)  # every object at every destination
    assert list(row_of("delivered")) == ["4.1"]
    set_status("pdf", DeliveryStatus.DELIVERY_FAILED, slice(1, 2))
    assert row_of("delivery_failed")["4.1"].reports[1]["status"] == "delivery_failed"
    with sessions() as session:
        assert queries.results(session, status="failed")[0].sop_instance_uid == "4.2"
        assert len(queries.results(session, limit=1)) == 1


def test_one_prediction_per_instance_and_model_version(store):
    _, sessions = store
    row = predicted(sessions, new("5.1"), "8.1", "/x", [], age_years=40.0)
    with sessions() as session:
        assert queries.already_predicted(session, [row.id], "M", "1") == {row.id}
        assert queries.already_predicted(session, [row.id], "M", "2") == set()
