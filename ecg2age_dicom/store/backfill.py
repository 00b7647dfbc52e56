"""The backfill's state: studies listed and ECG instances found in each source, and how far
each got (``pending`` -> ``retrieved`` -> ``scored`` | ``refused``, or ``already_done``).

The outcome of a retrieved instance is read from ``received_instances``, where the listener
(C-MOVE) or the backfill's own C-GET stored it and the service's workers scored it: this
module never scores nor decides anything itself. As in :mod:`.queries`, each function takes a
Session and leaves the commit to the caller.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ecg2age_dicom.store.models import (
    BackfillItem,
    BackfillState,
    BackfillStudy,
    InstanceStatus,
    ReceivedInstance,
)
from ecg2age_dicom.store.queries import _INSERT, aware, utcnow


@dataclass(frozen=True)
class Found:
    """One ECG instance a source's C-FIND listed (its UIDs checked)."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    study_date: str


def is_listed(session: Session, source: str, study_instance_uid: str) -> bool:
    """Whether the study's instances were listed by an earlier run."""
    return (
        session.scalar(
            select(BackfillStudy.id).where(
                BackfillStudy.source == source,
                BackfillStudy.study_instance_uid == study_instance_uid,
            )
        )
        is not None
    )


@functools.cache
def _insert_item(dialect: str) -> Any:
    table = BackfillItem.__table__
    return _INSERT[dialect](table).on_conflict_do_nothing(
        index_elements=[table.c.source, table.c.sop_instance_uid]
    )


def record_study(
    session: Session, source: str, study_instance_uid: str, study_date: str, found: Sequence[Found]
) -> None:
    """The study as listed, and each of its ECG instances as pending (unless known)."""
    now = utcnow()
    if found:
        session.execute(
            _insert_item(session.get_bind().dialect.name),
            [
                {
                    **item.__dict__,
                    "source": source,
                    "state": BackfillState.PENDING.value,
                    "attempts": 0,
                    "found_at": now,
                }
                for item in found
            ],
        )
    session.add(
        BackfillStudy(
            source=source,
            study_instance_uid=study_instance_uid,
            study_date=study_date,
            queried_at=now,
        )
    )


def _in_range(since: str | None, until: str | None) -> list[Any]:
    """Conditions on an item's study date (YYYYMMDD strings compare as dates)."""
    conditions = []
    if since:
        conditions.append(BackfillItem.study_date >= since)
    if until:
        conditions.append(BackfillItem.study_date <= until)
    return conditions


def pending(
    session: Session, source: str, since: str | None, until: str | None, after_id: int, limit: int
) -> list[BackfillItem]:
    """Pending items of ``source`` in the date range, oldest found first, after ``after_id``."""
    return list(
        session.scalars(
            select(BackfillItem)
            .where(
                BackfillItem.source == source,
                BackfillItem.state == BackfillState.PENDING,
                BackfillItem.id > after_id,
                *_in_range(since, until),
            )
            .order_by(BackfillItem.id)
            .limit(limit)
        )
    )


def received(session: Session, uids: Iterable[str]) -> set[str]:
    """Which of these SOP Instance UIDs this service already holds."""
    wanted = list(uids)
    if not wanted:
        return set()
    return set(
        session.scalars(
            select(ReceivedInstance.sop_instance_uid).where(
                ReceivedInstance.sop_instance_uid.in_(wanted)
            )
        )
    )


def finish_retrieval(
    session: Session, item_id: int, state: BackfillState, error: str | None = None
) -> None:
    """One retrieval's outcome: ``retrieved``, ``already_done``, or still ``pending`` with the
    reason it failed (tried again by the next run)."""
    values: dict[str, Any] = {"state": state, "attempts": BackfillItem.attempts + 1}
    if state is BackfillState.RETRIEVED:
        values["retrieved_at"] = utcnow()
    if state is BackfillState.ALREADY_DONE:
        values["attempts"] = BackfillItem.attempts
    values["last_error"] = error
    session.execute(update(BackfillItem).where(BackfillItem.id == item_id).values(**values))


def settle(session: Session, source: str) -> tuple[int, int]:
    """Retrieved items whose ECG is now final become ``scored`` or ``refused`` (with the
    reason). Returns (how many are still being scored, how many were settled now)."""
    rows = session.execute(
        select(BackfillItem.id, ReceivedInstance.status, ReceivedInstance.error)
        .join(ReceivedInstance, ReceivedInstance.sop_instance_uid == BackfillItem.sop_instance_uid)
        .where(BackfillItem.source == source, BackfillItem.state == BackfillState.RETRIEVED)
    ).all()
    waiting = 0
    for item_id, status, error in rows:
        if status == InstanceStatus.PREDICTED:
            state, reason = BackfillState.SCORED, None
        elif status == InstanceStatus.FAILED:
            state, reason = BackfillState.REFUSED, error
        else:
            waiting += 1
            continue
        session.execute(
            update(BackfillItem)
            .where(BackfillItem.id == item_id)
            .values(state=state, last_error=reason)
        )
    return waiting, len(rows) - waiting


def counts(
    session: Session, source: str, since: str | None, until: str | None
) -> Counter[BackfillState]:
    """The items of ``source`` in the date range, by state."""
    rows = session.execute(
        select(BackfillItem.state, func.count())
        .where(BackfillItem.source == source, *_in_range(since, until))
        .group_by(BackfillItem.state)
    ).all()
    return Counter({BackfillState(state): count for state, count in rows})


def refusal_reasons(
    session: Session, source: str, since: str | None, until: str | None
) -> Counter[str]:
    """How many refused items of the range gave each reason."""
    rows = session.execute(
        select(BackfillItem.last_error, func.count())
        .where(
            BackfillItem.source == source,
            BackfillItem.state == BackfillState.REFUSED,
            *_in_range(since, until),
        )
        .group_by(BackfillItem.last_error)
    ).all()
    return Counter({reason or "no reason given": count for reason, count in rows})


def received_at(session: Session, uid: str) -> datetime | None:
    """When this service received the instance, or None when it does not hold it."""
    moment = session.scalar(
        select(ReceivedInstance.received_at).where(ReceivedInstance.sop_instance_uid == uid)
    )
    return None if moment is None else aware(moment)
