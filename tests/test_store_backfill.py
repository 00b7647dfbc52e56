"""The backfill's state (:mod:`ecg2age_dicom.store.backfill`) on SQLite and PostgreSQL: a
study listed twice keeps one row per instance, pending items by date range, settling from the
received instances' outcome, the counts the summary prints, and ``results``' source."""

from __future__ import annotations

from datetime import timedelta

from pydicom.uid import TwelveLeadECGWaveformStorage, generate_uid
from sqlalchemy import select, update

from ecg2age_dicom.store import backfill as state
from ecg2age_dicom.store import queries
from ecg2age_dicom.store.models import BackfillItem, BackfillState, InstanceStatus
from ecg2age_dicom.store.models import ReceivedInstance as Received
from tests.store_factory import predicted


def found(date: str) -> state.Found:
    return state.Found(
        generate_uid(), generate_uid(), generate_uid(), TwelveLeadECGWaveformStorage, date
    )


def received(sessions, item: state.Found, status: InstanceStatus = InstanceStatus.RECEIVED):
    new = queries.NewInstance(item.sop_instance_uid, item.study_instance_uid, "", "", "/x.dcm")
    with sessions.begin() as session:
        queries.record_received(session.connection(), new)
        session.execute(
            update(Received)
            .where(Received.sop_instance_uid == item.sop_instance_uid)
            .values(status=status, error="no QRS rhythm" if status == "failed" else None)
        )


def test_a_study_listed_again_adds_no_second_row_and_pending_follows_the_range(store):
    _, sessions = store
    january, february = found("20240110"), found("20240220")
    with sessions.begin() as session:
        state.record_study(session, "ARCHIVE", "1.2.3", "20240110", [january, february])
    with sessions.begin() as session:  # a killed run's study listed again by hand
        state.record_study(session, "ARCHIVE", "1.2.4", "20240110", [january])
        assert state.is_listed(session, "ARCHIVE", "1.2.3")
        assert not state.is_listed(session, "OTHER", "1.2.3")
    with sessions() as session:
        assert len(session.scalars(select(BackfillItem)).all()) == 2
        in_january = state.pending(session, "ARCHIVE", "20240101", "20240131", 0, 10)
        assert [item.sop_instance_uid for item in in_january] == [january.sop_instance_uid]
        everything = state.pending(session, "ARCHIVE", None, None, 0, 10)
        assert len(everything) == 2
        assert state.pending(session, "ARCHIVE", None, None, everything[0].id, 10) == everything[1:]


def test_retrieved_items_settle_from_what_the_service_made_of_them(store):
    _, sessions = store
    items = [found("20240110") for _ in range(3)]
    with sessions.begin() as session:
        state.record_study(session, "ARCHIVE", "1.2.3", "20240110", items)
    with sessions.begin() as session:
        ids = {item.sop_instance_uid: item.id for item in session.scalars(select(BackfillItem))}
        for item in items:
            state.finish_retrieval(session, ids[item.sop_instance_uid], BackfillState.RETRIEVED)
    predicted(
        sessions,
        queries.NewInstance(items[0].sop_instance_uid, "1.2.3", "", "", "/a.dcm"),
        generate_uid(),
        "/a-sr.dcm",
        ["PACS"],
    )
    received(sessions, items[1], InstanceStatus.FAILED)
    received(sessions, items[2])  # still being scored
    with sessions.begin() as session:
        assert state.settle(session, "ARCHIVE") == (1, 2)
    with sessions() as session:
        counts = state.counts(session, "ARCHIVE", None, None)
        assert counts[BackfillState.SCORED] == counts[BackfillState.REFUSED] == 1
        assert counts[BackfillState.RETRIEVED] == 1
        reasons = state.refusal_reasons(session, "ARCHIVE", None, None)
        assert reasons == {"no QRS rhythm": 1}
        sources = queries.backfilled_from(session, [item.sop_instance_uid for item in items])
        assert sources == dict.fromkeys((item.sop_instance_uid for item in items), "ARCHIVE")
        row = queries.results(session, limit=10)
        assert {r.backfilled_from for r in row} == {"ARCHIVE"}


def test_a_failed_retrieval_counts_its_attempts_and_keeps_the_reason(store):
    _, sessions = store
    item = found("20240110")
    with sessions.begin() as session:
        state.record_study(session, "ARCHIVE", "1.2.3", "20240110", [item])
    for _ in range(2):
        with sessions.begin() as session:
            (row,) = session.scalars(select(BackfillItem)).all()
            state.finish_retrieval(session, row.id, BackfillState.PENDING, "C-MOVE status 0xA702")
    with sessions() as session:
        (row,) = session.scalars(select(BackfillItem)).all()
        assert (row.attempts, row.last_error, row.state) == (
            2,
            "C-MOVE status 0xA702",
            BackfillState.PENDING,
        )
        assert state.received_at(session, item.sop_instance_uid) is None
    received(sessions, item)
    with sessions() as session:
        moment = state.received_at(session, item.sop_instance_uid)
        assert moment is not None and moment.utcoffset() == timedelta(0)
