"""What the web console reads from the results tables (never writes: resending is
:func:`~ecg2age_dicom.store.queries.resend`).

The worklist is paged by key (``id`` below the last one shown), newest first, and each filter
is an indexed column or an ``EXISTS`` on the deliveries, so that a page costs the same at row
100,000 as at row 1 (``benchmarks/bench_worklist.py``). An ECG's status is the one of
``results`` (:func:`~ecg2age_dicom.store.queries.overall_status`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, selectinload
from sqlalchemy.sql.base import ExecutableOption

from ecg2age_dicom.store.models import (
    Delivery,
    DeliveryStatus,
    InstanceStatus,
    Prediction,
    ReceivedInstance,
    Report,
)
from ecg2age_dicom.store.queries import (
    aware,
    latest_prediction,
    overall_status,
    utcnow,
)

STATUSES = ("received", "processing", "failed", "predicted", "delivered", "delivery_failed")


def _deliveries(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """EXISTS a delivery of the instance's reports meeting ``conditions`` (correlated: cheap
    where most instances have one, as a page stops at its 51st row)."""
    return exists(
        select(Delivery.id)
        .join(Report, Delivery.report_id == Report.id)
        .join(Prediction, Report.prediction_id == Prediction.id)
        .where(Prediction.instance_id == ReceivedInstance.id, *conditions)
    )


_STATE_OF = {
    "predicted": ("pending", "none", ""),  # "": not yet kept (never, since migration 0008)
    "delivered": ("delivered",),
    "delivery_failed": ("delivery_failed",),
}
"""The ``delivery_state`` values of a predicted ECG in each status (the status of
:func:`~ecg2age_dicom.store.queries.overall_status`)."""


def _status_is(status: str) -> ColumnElement[bool]:
    if status in _STATE_OF:
        return and_(
            ReceivedInstance.status == InstanceStatus.PREDICTED,
            ReceivedInstance.delivery_state.in_(_STATE_OF[status]),
        )
    return ReceivedInstance.status == InstanceStatus(status)


@dataclass(frozen=True)
class WorklistFilter:
    """The worklist's filters; None: not filtered. ``search``: a SOP or Study Instance UID, an
    accession number or a patient ID, matched exactly."""

    status: str | None = None
    received_from: date | None = None
    received_to: date | None = None  # inclusive
    calling_ae_title: str | None = None
    destination: str | None = None
    search: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.status in STATUSES:
            where.append(_status_is(self.status))
        if self.received_from:
            where.append(ReceivedInstance.received_at >= _midnight(self.received_from))
        if self.received_to:
            where.append(
                ReceivedInstance.received_at < _midnight(self.received_to + timedelta(days=1))
            )
        if self.calling_ae_title:
            where.append(ReceivedInstance.calling_ae_title == self.calling_ae_title)
        if self.destination:
            where.append(_deliveries(Delivery.destination == self.destination))
        if self.search:
            where.append(
                or_(
                    ReceivedInstance.sop_instance_uid == self.search,
                    ReceivedInstance.study_instance_uid == self.search,
                    ReceivedInstance.accession_number == self.search,
                    ReceivedInstance.patient_id == self.search,
                )
            )
        return where


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=timezone.utc)


@dataclass(frozen=True)
class WorklistRow:
    id: int
    sop_instance_uid: str
    received_at: datetime
    calling_ae_title: str
    patient_id: str
    accession_number: str
    status: str
    predicted_age_years: float | None
    age_gap_years: float | None
    quality_flags: Sequence[str]


def _with_reports() -> ExecutableOption:
    return (
        selectinload(ReceivedInstance.predictions)
        .selectinload(Prediction.reports)
        .selectinload(Report.deliveries)
    )


def worklist(
    session: Session, filters: WorklistFilter, before_id: int | None = None, size: int = 50
) -> tuple[list[WorklistRow], int | None]:
    """One page of the worklist, newest first, and the ``before_id`` of the next (None: last)."""
    query = select(ReceivedInstance).where(*filters.conditions())
    if before_id is not None:
        query = query.where(ReceivedInstance.id < before_id)
    query = query.options(_with_reports()).order_by(ReceivedInstance.id.desc()).limit(size + 1)
    instances = list(session.scalars(query))
    rows = []
    for instance in instances[:size]:
        prediction = latest_prediction(instance)
        rows.append(
            WorklistRow(
                id=instance.id,
                sop_instance_uid=instance.sop_instance_uid,
                received_at=instance.received_at,
                calling_ae_title=instance.calling_ae_title,
                patient_id=instance.patient_id,
                accession_number=instance.accession_number,
                status=overall_status(instance, prediction.reports if prediction else []),
                predicted_age_years=prediction.predicted_age_years if prediction else None,
                age_gap_years=prediction.age_gap_years if prediction else None,
                quality_flags=list(prediction.quality_flags) if prediction else [],
            )
        )
    more = len(instances) > size
    return rows, rows[-1].id if more else None


def instance_detail(session: Session, sop_instance_uid: str) -> ReceivedInstance | None:
    """An instance with its predictions, reports and deliveries loaded."""
    return session.scalar(
        select(ReceivedInstance)
        .where(ReceivedInstance.sop_instance_uid == sop_instance_uid)
        .options(_with_reports())
    )


def report_of(session: Session, sop_instance_uid: str, kind: str) -> Report | None:
    """The newest report of ``kind`` made for an ECG."""
    return session.scalar(
        select(Report)
        .join(Prediction, Report.prediction_id == Prediction.id)
        .join(ReceivedInstance, Prediction.instance_id == ReceivedInstance.id)
        .where(ReceivedInstance.sop_instance_uid == sop_instance_uid, Report.kind == kind)
        .order_by(Report.id.desc())
        .limit(1)
    )


@dataclass(frozen=True)
class Activity:
    """How many ECGs were received and predicted, and how many report objects delivered (to
    every destination), in each hour of the last day, oldest hour first (24 per list)."""

    received: list[int]
    predicted: list[int]
    delivered: list[int]

    def last_hour(self, which: str) -> int:
        return getattr(self, which)[-1]

    def last_day(self, which: str) -> int:
        return sum(getattr(self, which))


def activity(session: Session, now: datetime | None = None) -> Activity:
    now = now or utcnow()
    start = now - timedelta(hours=24)

    def hourly(column: ColumnElement[datetime] | InstrumentedAttribute[datetime]) -> list[int]:
        counts = [0] * 24
        for (moment,) in session.execute(select(column).where(column >= start)):
            counts[min(23, int((aware(moment) - start).total_seconds() // 3600))] += 1
        return counts

    delivered = (
        select(func.max(Delivery.delivered_at).label("at"))
        .where(Delivery.status == DeliveryStatus.DELIVERED)
        .group_by(Delivery.report_id)
        .subquery()
    )
    return Activity(
        received=hourly(ReceivedInstance.received_at),
        predicted=hourly(Prediction.created_at),
        delivered=hourly(delivered.c.at),
    )


def status_counts(session: Session) -> dict[str, int]:
    """How many ECGs are in each status of :data:`STATUSES`: one count by instance status
    and delivery state."""
    counts = dict.fromkeys(STATUSES, 0)
    rows = session.execute(
        select(ReceivedInstance.status, ReceivedInstance.delivery_state, func.count()).group_by(
            ReceivedInstance.status, ReceivedInstance.delivery_state
        )
    ).all()
    for status, state, count in rows:
        if status != InstanceStatus.PREDICTED:
            counts[InstanceStatus(status).value] += count
            continue
        shown = next((name for name, states in _STATE_OF.items() if state in states), "predicted")
        counts[shown] += count
    return counts


def oldest_unprocessed(session: Session) -> datetime | None:
    """When the oldest ECG still waiting for a worker (received or processing) arrived."""
    return session.scalar(
        select(func.min(ReceivedInstance.received_at)).where(
            ReceivedInstance.status.in_([InstanceStatus.RECEIVED, InstanceStatus.PROCESSING])
        )
    )


def delivery_failures(session: Session, limit: int = 20) -> list[tuple[str, Delivery]]:
    """The newest deliveries that failed or wait for a retry with an error, with their ECG's
    SOP Instance UID."""
    rows = session.execute(
        select(ReceivedInstance.sop_instance_uid, Delivery)
        .join(Report, Delivery.report_id == Report.id)
        .join(Prediction, Report.prediction_id == Prediction.id)
        .join(ReceivedInstance, Prediction.instance_id == ReceivedInstance.id)
        .where(Delivery.last_error.is_not(None))
        .where(Delivery.status != DeliveryStatus.DELIVERED)
        .order_by(Delivery.id.desc())
        .limit(limit)
    ).all()
    return [(uid, delivery) for uid, delivery in rows]


def calling_ae_titles(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(ReceivedInstance.calling_ae_title)
            .distinct()
            .order_by(ReceivedInstance.calling_ae_title)
        )
    )


@dataclass(frozen=True)
class CohortRow:
    sop_instance_uid: str
    study_instance_uid: str
    received_at: datetime
    patient_sex: str
    predicted_age_years: float
    chronological_age_years: float | None
    age_gap_years: float | None
    age_gap_corrected_years: float | None
    model_name: str
    model_version: str
    quality_flags: Sequence[str]

    @staticmethod
    def csv_header() -> list[str]:
        return [column.name for column in fields(CohortRow)]

    def csv_values(self) -> list[object]:
        """The row for the cohort's CSV: times in ISO 8601, flags joined by ";"."""
        values: list[object] = []
        for column in fields(self):
            value = getattr(self, column.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, list | tuple):
                value = ";".join(value)
            values.append(value)
        return values


def cohort(session: Session) -> Iterator[CohortRow]:
    """Every prediction with its ECG's UIDs and the patient's sex, oldest first."""
    query = (
        select(Prediction, ReceivedInstance)
        .join(ReceivedInstance, Prediction.instance_id == ReceivedInstance.id)
        .order_by(Prediction.id)
        .execution_options(yield_per=1000)
    )
    for prediction, instance in session.execute(query):
        yield CohortRow(
            sop_instance_uid=instance.sop_instance_uid,
            study_instance_uid=instance.study_instance_uid,
            received_at=instance.received_at,
            patient_sex=instance.patient_sex,
            predicted_age_years=prediction.predicted_age_years,
            chronological_age_years=prediction.chronological_age_years,
            age_gap_years=prediction.age_gap_years,
            age_gap_corrected_years=prediction.age_gap_corrected_years,
            model_name=prediction.model_name,
            model_version=prediction.model_version,
            quality_flags=list(prediction.quality_flags),
        )
