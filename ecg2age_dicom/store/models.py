"""The results tables, as typed SQLAlchemy 2 ORM classes.

States (README, "How it keeps your data"): an instance is ``received`` -> ``processing`` (claimed
by a worker) -> ``predicted`` | ``failed``; a prediction has one report per object kind (an SR,
a PDF...), and each report one delivery per destination,
``pending`` -> ``sending`` (claimed by a sender) -> ``delivered`` | ``pending`` again with a
later ``next_attempt_at`` | ``delivery_failed`` after the last attempt.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

UID = String(64)


class InstanceStatus(str, enum.Enum):
    RECEIVED = "received"
    PROCESSING = "processing"
    PREDICTED = "predicted"
    FAILED = "failed"


class DeliveryStatus(str, enum.Enum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    DELIVERY_FAILED = "delivery_failed"


def _enum(kind: type[enum.Enum], name: str) -> Enum:
    return Enum(
        kind,
        name=name,
        native_enum=False,
        length=20,
        values_callable=lambda members: [m.value for m in members],
    )


class Base(DeclarativeBase):
    pass


class ReceivedInstance(Base):
    """One ECG received (or dropped into the spool), whatever became of it."""

    __tablename__ = "received_instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, default="")
    series_instance_uid: Mapped[str] = mapped_column(UID, default="")
    sop_class_uid: Mapped[str] = mapped_column(UID, default="")
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="", index=True)
    peer_address: Mapped[str] = mapped_column(String(64), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    # What the console searches and groups by, cleaned to their VR (PHI: the console shows
    # them only after a login).
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    spool_path: Mapped[str] = mapped_column(Text)
    # Of a predicted instance: where its reports are, from every delivery of every prediction
    # (queries.refresh_delivery_state keeps it): "pending" (one on its way), "delivered"
    # (all), "delivery_failed" (one gave up), "none" (nowhere to go); "" before.
    delivery_state: Mapped[str] = mapped_column(String(20), default="", index=True)
    status: Mapped[InstanceStatus] = mapped_column(
        _enum(InstanceStatus, "instance_status"), default=InstanceStatus.RECEIVED, index=True
    )
    error: Mapped[str | None] = mapped_column(Text, default=None)
    claimed_by: Mapped[str | None] = mapped_column(String(128), default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    predictions: Mapped[list[Prediction]] = relationship(back_populates="instance")


class Prediction(Base):
    """One model version's age for one instance (never two for the same pair)."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("instance_id", "model_name", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("received_instances.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    predicted_age_years: Mapped[float] = mapped_column(Float)
    chronological_age_years: Mapped[float | None] = mapped_column(Float, default=None)
    age_gap_years: Mapped[float | None] = mapped_column(Float, default=None)
    # where the model card defines a correction (ecg2age_dicom.age.GapCorrection)
    age_gap_corrected_years: Mapped[float | None] = mapped_column(Float, default=None)
    quality_flags: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: clean
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    instance: Mapped[ReceivedInstance] = relationship(back_populates="predictions")
    reports: Mapped[list[Report]] = relationship(back_populates="prediction", order_by="Report.id")


class Report(Base):
    """One report object written for a prediction: its kind (``sr``, ``pdf``), file and UID."""

    __tablename__ = "reports"
    __table_args__ = (
        UniqueConstraint("prediction_id", "kind", name="uq_reports_prediction_id_kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"))
    kind: Mapped[str] = mapped_column(String(8), default="sr")
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    prediction: Mapped[Prediction] = relationship(back_populates="reports")
    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="report", order_by="Delivery.id"
    )


class Delivery(Base):
    """Sending one report to one destination, with its retry state."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("report_id", "destination"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    report: Mapped[Report] = relationship(back_populates="deliveries")


class BackfillState(str, enum.Enum):
    PENDING = "pending"  # found in the source, not yet retrieved
    RETRIEVED = "retrieved"  # in this service's database, being scored
    SCORED = "scored"
    REFUSED = "refused"  # the listener or the scoring refused it (reason in last_error)
    ALREADY_DONE = "already_done"  # this service had it before the backfill found it


class BackfillStudy(Base):
    """A study of a source whose ECG instances ``backfill`` has listed (never queried twice)."""

    __tablename__ = "backfill_studies"
    __table_args__ = (UniqueConstraint("source", "study_instance_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(UID)
    study_date: Mapped[str] = mapped_column(String(8), default="")  # DA: YYYYMMDD
    queried_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BackfillItem(Base):
    """One ECG instance a source holds, and how far ``backfill`` got with it."""

    __tablename__ = "backfill_items"
    __table_args__ = (UniqueConstraint("source", "sop_instance_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    study_instance_uid: Mapped[str] = mapped_column(UID)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    study_date: Mapped[str] = mapped_column(String(8), default="")
    state: Mapped[BackfillState] = mapped_column(
        _enum(BackfillState, "backfill_state"), default=BackfillState.PENDING, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # retrievals tried
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    found_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    retrieved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Role(str, enum.Enum):
    ADMIN = "admin"  # may also resend and read the audit trail
    VIEWER = "viewer"


class User(Base):
    """A person who may use the web console: a name, a role and a password hash (argon2)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "user_role"))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)  # since the last success
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class AuditEvent(Base):
    """Who did what, and when: append-only (the database refuses UPDATE and DELETE)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(64))  # a user's name, "cli" or "service"
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")  # no PHI: UIDs, names of users
