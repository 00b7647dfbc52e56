"""The store's operations: record, claim, finish, and list results.

Each function takes a Session and leaves the commit to the caller, so that a stage can put
several changes in one transaction. Claims are single statements: ``UPDATE ... WHERE id IN
(SELECT ... LIMIT n FOR UPDATE SKIP LOCKED) RETURNING`` on PostgreSQL; on SQLite the same
statement without the locking clause, atomic because SQLite has one writer at a time.
The candidate ids come from a CTE, which PostgreSQL evaluates exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Result,
    Select,
    and_,
    bindparam,
    case,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from ecg2age_dicom.store.models import (
    BackfillItem,
    BackfillState,
    Delivery,
    DeliveryStatus,
    InstanceStatus,
    Prediction,
    ReceivedInstance,
    Report,
)

BACKFILLED = (BackfillState.RETRIEVED, BackfillState.SCORED, BackfillState.REFUSED)
"""States of an instance that came into this service through the backfill."""

# Each dialect's INSERT, which has ON CONFLICT DO NOTHING.
_INSERT: dict[str, Callable[..., Any]] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def _rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE changed (a DML statement's result is a CursorResult)."""
    return int(cast(CursorResult[Any], result).rowcount or 0)


def refresh_delivery_state(session: Session, instance_ids: Any) -> None:
    """Set ``delivery_state`` of these instances (ids, or a SELECT of them) from every
    delivery of their reports, in one UPDATE: delivery_failed (one gave up), pending (one on
    its way), delivered (all), none (no delivery). One aggregate per instance, reached from
    its predictions by index (a test on the status would lead SQLite to scan by status)."""
    failed = func.sum(case((Delivery.status == DeliveryStatus.DELIVERY_FAILED, 1), else_=0))
    undelivered = func.sum(case((Delivery.status != DeliveryStatus.DELIVERED, 1), else_=0))
    state = (
        select(
            case(
                (func.count(Delivery.id) == 0, "none"),
                (failed > 0, "delivery_failed"),
                (undelivered > 0, "pending"),
                else_="delivered",
            )
        )
        .select_from(Prediction)
        .join(Report, Report.prediction_id == Prediction.id)
        .join(Delivery, Delivery.report_id == Report.id)
        .where(Prediction.instance_id == ReceivedInstance.id)
        .scalar_subquery()
    )
    session.connection().execute(
        update(ReceivedInstance)
        .where(ReceivedInstance.id.in_(instance_ids))
        .values(delivery_state=state)
    )


def _instances_of(*conditions: ColumnElement[bool]) -> Select[int]:
    """The instances with a delivery meeting ``conditions``."""
    return (
        select(Prediction.instance_id)
        .join(Report, Report.prediction_id == Prediction.id)
        .join(Delivery, Delivery.report_id == Report.id)
        .where(*conditions)
    )


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def aware(moment: datetime) -> datetime:
    """``moment`` with its time zone: SQLite gives back naive datetimes, written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class NewInstance:
    """What the listener (or a file drop) knows about a received ECG."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    spool_path: str
    calling_ae_title: str = ""
    peer_address: str = ""
    patient_id: str = ""
    accession_number: str = ""
    patient_sex: str = ""
    status: InstanceStatus = InstanceStatus.RECEIVED
    error: str | None = None


@functools.cache
def _insert_new_instance(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` for received instances, built once
    per dialect so that SQLAlchemy's compiled-statement cache serves every ECG."""
    table = ReceivedInstance.__table__
    return (
        _INSERT[dialect](table)
        .on_conflict_do_nothing(index_elements=[table.c.sop_instance_uid])
        .returning(table.c.id)
    )


def record_received(connection: Connection, new: NewInstance) -> tuple[int, bool]:
    """Insert a received instance unless its SOP Instance UID is already there.

    One ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` (SQLite and PostgreSQL) on a Core
    connection: the listener pays one statement per ECG and none of the ORM's bookkeeping,
    and two connections inserting the same UID cannot both win. ``Session.connection()``
    gives one inside an ORM transaction.

    Returns
    -------
    (row id, created)
        ``created`` is False for a duplicate: nothing was changed.
    """
    statement = _insert_new_instance(connection.dialect.name)
    row_id = connection.scalar(statement, {**new.__dict__, "received_at": utcnow()})
    if row_id is not None:
        return row_id, True
    existing = connection.scalar(
        select(ReceivedInstance.id).where(ReceivedInstance.sop_instance_uid == new.sop_instance_uid)
    )
    assert existing is not None
    return existing, False


def claim_received(session: Session, worker: str, limit: int) -> list[ReceivedInstance]:
    """Atomically move up to ``limit`` received instances to processing for ``worker``."""
    candidates = (
        select(ReceivedInstance.id)
        .where(ReceivedInstance.status == InstanceStatus.RECEIVED)
        .order_by(ReceivedInstance.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite renders no locking clause
        # A CTE is evaluated once; PostgreSQL may re-run a plain IN (subquery) per row and
        # then claim more than ``limit`` rows.
        .cte("candidates")
    )
    claimed_ids = session.scalars(
        update(ReceivedInstance)
        .where(ReceivedInstance.id.in_(select(candidates.c.id)))
        .where(ReceivedInstance.status == InstanceStatus.RECEIVED)
        .values(status=InstanceStatus.PROCESSING, claimed_by=worker, claimed_at=utcnow())
        .returning(ReceivedInstance.id)
    ).all()
    if not claimed_ids:
        return []
    rows = session.scalars(
        select(ReceivedInstance)
        .where(ReceivedInstance.id.in_(claimed_ids))
        .order_by(ReceivedInstance.id)
        .execution_options(populate_existing=True)
    ).all()
    return list(rows)


def requeue_stale_claims(session: Session, older_than: timedelta) -> int:
    """Give claims of workers that died (older than ``older_than``) back to the queue."""
    result = session.execute(
        update(ReceivedInstance)
        .where(ReceivedInstance.status == InstanceStatus.PROCESSING)
        .where(ReceivedInstance.claimed_at < utcnow() - older_than)
        .values(status=InstanceStatus.RECEIVED, claimed_by=None, claimed_at=None)
    )
    return _rowcount(result)


def mark_failed(session: Session, instance: ReceivedInstance, reason: str) -> None:
    """Final state for an instance that cannot be used, with the reason."""
    instance.status = InstanceStatus.FAILED
    instance.error = reason
    instance.claimed_by = None


def already_predicted(
    session: Session, instance_ids: Sequence[int], model_name: str, model_version: str
) -> set[int]:
    """Which of these instances this model version has already predicted."""
    return set(
        session.scalars(
            select(Prediction.instance_id).where(
                Prediction.instance_id.in_(instance_ids),
                Prediction.model_name == model_name,
                Prediction.model_version == model_version,
            )
        )
    )


@dataclass(frozen=True)
class NewReport:
    """One report object written to the spool."""

    kind: str
    sop_instance_uid: str
    path: str


@dataclass(frozen=True)
class NewResult:
    """One scored ECG: its prediction, its report objects and where each goes."""

    instance_id: int
    model_name: str
    model_version: str
    predicted_age_years: float
    chronological_age_years: float | None
    age_gap_years: float | None
    quality_flags: Sequence[str]
    reports: Sequence[NewReport]
    destinations: Sequence[str]
    age_gap_corrected_years: float | None = None


def save_results(session: Session, results: Sequence[NewResult]) -> None:
    """Store each result's prediction, its reports and one pending delivery per report and
    destination, and mark its instance predicted: four Core statements for the whole batch
    (the ORM's unit of work would cost milliseconds per ECG)."""
    if not results:
        return
    now, connection = utcnow(), session.connection()  # Core statements on the ORM's connection
    prediction_ids = connection.scalars(
        insert(Prediction).returning(Prediction.id, sort_by_parameter_order=True),
        [
            {
                "instance_id": result.instance_id,
                "model_name": result.model_name,
                "model_version": result.model_version,
                "predicted_age_years": result.predicted_age_years,
                "chronological_age_years": result.chronological_age_years,
                "age_gap_years": result.age_gap_years,
                "age_gap_corrected_years": result.age_gap_corrected_years,
                "quality_flags": list(result.quality_flags),
                "created_at": now,
            }
            for result in results
        ],
    ).all()
    made = [
        (prediction_id, report, result.destinations)
        for prediction_id, result in zip(prediction_ids, results, strict=True)
        for report in result.reports
    ]
    report_ids = connection.scalars(
        insert(Report).returning(Report.id, sort_by_parameter_order=True),
        [
            {
                "prediction_id": prediction_id,
                "kind": report.kind,
                "sop_instance_uid": report.sop_instance_uid,
                "path": report.path,
                "created_at": now,
            }
            for prediction_id, report, _ in made
        ],
    ).all()
    deliveries = [
        {
            "report_id": report_id,
            "destination": destination,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
        }
        for report_id, (_, _, destinations) in zip(report_ids, made, strict=True)
        for destination in dict.fromkeys(destinations)
    ]
    if deliveries:
        connection.execute(insert(Delivery), deliveries)
    instance_ids = [result.instance_id for result in results]
    connection.execute(
        update(ReceivedInstance)
        .where(ReceivedInstance.id.in_(instance_ids))
        .values(status=InstanceStatus.PREDICTED, error=None, claimed_by=None)
    )
    refresh_delivery_state(session, instance_ids)


@dataclass(frozen=True)
class ResultRow:
    """One line of ``ecg2age-dicom results``."""

    sop_instance_uid: str
    study_instance_uid: str
    status: str
    received_at: str
    calling_ae_title: str
    predicted_age_years: float | None
    chronological_age_years: float | None
    age_gap_years: float | None
    age_gap_corrected_years: float | None
    quality_flags: list[str] | None
    model_name: str | None
    model_version: str | None
    error: str | None
    sr_sop_instance_uid: str | None
    reports: list[dict[str, str]]
    """Each report object: ``{kind, sop_instance_uid, status}`` (status as for the ECG)."""
    backfilled_from: str | None = None
    """The ``[[sources]]`` name ``backfill`` retrieved it from; None when it was sent."""


def _delivery_state(deliveries: Sequence[Delivery]) -> str:
    """delivered (every delivery), delivery_failed (any), else predicted."""
    states = {delivery.status for delivery in deliveries}
    if DeliveryStatus.DELIVERY_FAILED in states:
        return DeliveryStatus.DELIVERY_FAILED.value
    if states == {DeliveryStatus.DELIVERED}:
        return DeliveryStatus.DELIVERED.value
    return InstanceStatus.PREDICTED.value


def overall_status(instance: ReceivedInstance, reports: Sequence[Report]) -> str:
    """received | processing | failed | predicted | delivered (every object reached every
    destination) | delivery_failed (one gave up)."""
    deliveries = [delivery for report in reports for delivery in report.deliveries]
    if instance.status != InstanceStatus.PREDICTED or not deliveries:
        return instance.status.value
    return _delivery_state(deliveries)


def latest_prediction(instance: ReceivedInstance) -> Prediction | None:
    """The instance's newest prediction (the one ``results`` and the console show)."""
    return max(instance.predictions, key=lambda prediction: prediction.id, default=None)


def results(session: Session, status: str | None = None, limit: int = 100) -> list[ResultRow]:
    """The newest instances first, with their prediction, report and delivery state."""
    query = (
        select(ReceivedInstance)
        .options(
            selectinload(ReceivedInstance.predictions)
            .selectinload(Prediction.reports)
            .selectinload(Report.deliveries)
        )
        .order_by(ReceivedInstance.id.desc())
    )
    if status in {s.value for s in InstanceStatus} and status != InstanceStatus.PREDICTED:
        query = query.where(ReceivedInstance.status == InstanceStatus(status))
    elif status is not None:  # predicted / delivered / delivery_failed: decided per row below
        query = query.where(ReceivedInstance.status == InstanceStatus.PREDICTED)
    rows: list[ResultRow] = []
    for instance in session.scalars(query).yield_per(500):
        prediction = latest_prediction(instance)
        reports = prediction.reports if prediction else []
        row_status = overall_status(instance, reports)
        if status is not None and row_status != status:
            continue
        rows.append(
            ResultRow(
                sop_instance_uid=instance.sop_instance_uid,
                study_instance_uid=instance.study_instance_uid,
                status=row_status,
                received_at=instance.received_at.isoformat(),
                calling_ae_title=instance.calling_ae_title,
                predicted_age_years=prediction.predicted_age_years if prediction else None,
                chronological_age_years=prediction.chronological_age_years if prediction else None,
                age_gap_years=prediction.age_gap_years if prediction else None,
                age_gap_corrected_years=(
                    prediction.age_gap_corrected_years if prediction else None
                ),
                quality_flags=list(prediction.quality_flags) if prediction else None,
                model_name=prediction.model_name if prediction else None,
                model_version=prediction.model_version if prediction else None,
                error=instance.error,
                sr_sop_instance_uid=next(
                    (report.sop_instance_uid for report in reports if report.kind == "sr"), None
                ),
                reports=[
                    {
                        "kind": report.kind,
                        "sop_instance_uid": report.sop_instance_uid,
                        "status": _delivery_state(report.deliveries),
                    }
                    for report in reports
                ],
            )
        )
        if len(rows) >= limit:
            break
    origins = backfilled_from(session, [row.sop_instance_uid for row in rows])
    return [
        dataclasses.replace(row, backfilled_from=origins.get(row.sop_instance_uid)) for row in rows
    ]


def backfilled_from(session: Session, uids: Sequence[str]) -> dict[str, str]:
    """The source each of these SOP Instance UIDs was backfilled from (those that were)."""
    if not uids:
        return {}
    rows = session.execute(
        select(BackfillItem.sop_instance_uid, func.min(BackfillItem.source))
        .where(BackfillItem.sop_instance_uid.in_(list(uids)), BackfillItem.state.in_(BACKFILLED))
        .group_by(BackfillItem.sop_instance_uid)
    ).all()
    return {uid: source for uid, source in rows}


@dataclass(frozen=True)
class DueDelivery:
    """A claimed delivery: which report file goes where, and how often it was tried."""

    delivery_id: int
    destination: str
    report_path: str
    report_kind: str
    report_sop_instance_uid: str
    calling_ae_title: str
    attempts: int


def claim_due_deliveries(session: Session, limit: int) -> list[DueDelivery]:
    """Atomically move due pending deliveries to ``sending`` and describe them."""
    now = utcnow()
    candidates = (
        select(Delivery.id)
        .where(Delivery.status == DeliveryStatus.PENDING)
        .where(Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    ids = session.scalars(
        update(Delivery)
        .where(Delivery.id.in_(select(candidates.c.id)))
        .where(Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.SENDING, claimed_at=now)
        .returning(Delivery.id)
    ).all()
    if not ids:
        return []
    rows = session.execute(
        select(Delivery, Report, ReceivedInstance.calling_ae_title)
        .join(Report, Delivery.report_id == Report.id)
        .join(Prediction, Report.prediction_id == Prediction.id)
        .join(ReceivedInstance, Prediction.instance_id == ReceivedInstance.id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    ).all()
    return [
        DueDelivery(d.id, d.destination, r.path, r.kind, r.sop_instance_uid, ae, d.attempts)
        for d, r, ae in rows
    ]


@dataclass(frozen=True)
class Attempt:
    """The outcome of one delivery attempt: delivered, to retry at ``retry_at``, or (neither)
    given up."""

    delivery_id: int
    delivered: bool
    error: str | None = None
    retry_at: datetime | None = None

    @property
    def status(self) -> DeliveryStatus:
        if self.delivered:
            return DeliveryStatus.DELIVERED
        return DeliveryStatus.PENDING if self.retry_at else DeliveryStatus.DELIVERY_FAILED


def finish_deliveries(session: Session, attempts: Sequence[Attempt]) -> None:
    """Record attempts, one UPDATE for all of them: attempts + 1, the new status, when it
    was delivered or is due again, and the error."""
    if not attempts:
        return
    now = utcnow()
    session.connection().execute(
        update(Delivery)
        .where(Delivery.id == bindparam("delivery_id"))
        .values(
            attempts=Delivery.attempts + 1,
            claimed_at=None,
            status=bindparam("new_status"),
            delivered_at=bindparam("new_delivered_at"),
            next_attempt_at=bindparam("new_next_attempt_at"),
            last_error=bindparam("new_error"),
        ),
        [
            {
                "delivery_id": attempt.delivery_id,
                "new_status": attempt.status,
                "new_delivered_at": now if attempt.delivered else None,
                "new_next_attempt_at": attempt.retry_at,
                "new_error": None if attempt.delivered else attempt.error,
            }
            for attempt in attempts
        ],
    )
    delivery_ids = [attempt.delivery_id for attempt in attempts]
    refresh_delivery_state(session, _instances_of(Delivery.id.in_(delivery_ids)))


def requeue_stale_deliveries(session: Session, older_than: timedelta) -> int:
    """Deliveries left in ``sending`` by a dead process go back to ``pending``."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.status == DeliveryStatus.SENDING)
        .where(Delivery.claimed_at < utcnow() - older_than)
        .values(status=DeliveryStatus.PENDING, claimed_at=None)
    )
    return _rowcount(result)


def resend(session: Session, status: str = "delivery_failed", sop: str | None = None) -> int:
    """Make matching deliveries pending again, due now, with a fresh attempt count.

    ``sop`` matches the ECG's SOP Instance UID (all its reports) or one report's.
    """
    query = select(Delivery.id).join(Report, Delivery.report_id == Report.id)
    query = query.where(Delivery.status == DeliveryStatus(status))
    if sop:
        query = (
            query.join(Prediction, Report.prediction_id == Prediction.id)
            .join(ReceivedInstance, Prediction.instance_id == ReceivedInstance.id)
            .where((ReceivedInstance.sop_instance_uid == sop) | (Report.sop_instance_uid == sop))
        )
    result = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(query.scalar_subquery()))
        .values(
            status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=utcnow(), last_error=None
        )
    )
    # The resent are pending and untried now, as are only those not yet sent (whose ECGs
    # are "pending" already): a subquery, however many were resent.
    untried = and_(Delivery.status == DeliveryStatus.PENDING, Delivery.attempts == 0)
    refresh_delivery_state(session, _instances_of(untried))
    return _rowcount(result)


def delivered_before(session: Session, cutoff: datetime) -> list[tuple[Report, ReceivedInstance]]:
    """Reports every destination had before ``cutoff``, with their ECG (spool clean-up)."""
    undelivered = select(Delivery.report_id).where(
        (Delivery.status != DeliveryStatus.DELIVERED) | (Delivery.delivered_at >= cutoff)
    )
    rows = session.execute(
        select(Report, ReceivedInstance)
        .join(Prediction, Report.prediction_id == Prediction.id)
        .join(ReceivedInstance, Prediction.instance_id == ReceivedInstance.id)
        .where(Report.id.not_in(undelivered))
        .where(Report.path != "")
    ).all()
    return [(report, instance) for report, instance in rows]


def queue_depth(session: Session) -> list[tuple[str, int]]:
    """How many received instances are in each status (every status, 0 where none)."""
    query = select(ReceivedInstance.status, func.count()).group_by(ReceivedInstance.status)
    counts = {status: count for status, count in session.execute(query)}
    return [(status.value, int(counts.get(status, 0))) for status in InstanceStatus]
