"""Maintenance jobs: spool clean-up after the retention period."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from ecg2age_dicom.jobs import clean_spool
from ecg2age_dicom.store import queries
from ecg2age_dicom.store.models import Delivery
from tests.store_factory import predicted


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_spool_clean_up_removes_only_work_delivered_long_enough_ago(store, tmp_path):
    _, sessions = store
    ecg, report = tmp_path / "ecg.dcm", tmp_path / "sr.dcm"
    ecg.write_bytes(b"ecg")
    report.write_bytes(b"sr")
    instance = queries.NewInstance("7.1", "7.2", "7.3", "1.2.840.10008.5.1.4.1.1.9.1.1", str(ecg))
    predicted(sessions, instance, "7.9", str(report), ["PACS"])
    assert clean_spool(sessions, retention_days=1) == 0  # not delivered yet
    with sessions.begin() as session:
        delivery = session.scalars(select(Delivery)).one()
        queries.finish_deliveries(session, [queries.Attempt(delivery.id, delivered=True)])
    assert clean_spool(sessions, retention_days=1) == 0  # delivered just now
    with sessions.begin() as session:
        session.execute(update(Delivery).values(delivered_at=queries.utcnow() - timedelta(days=2)))
    assert clean_spool(sessions, retention_days=1) == 2
    assert not ecg.exists() and not report.exists()
    with sessions() as session:
        assert queries.results(session)[0].status == "delivered"  # the record stays
