"""The audit trail: who did what and when, append-only (the database refuses UPDATE and DELETE
on ``audit_events``: migration 0005).

Actions: ``start`` and ``stop`` of the service (detail: its version and a digest of its
configuration), ``user_add`` and ``user_remove`` (detail: the user's name and role), and the
console's ``login``, ``login_failed``, ``login_refused`` (locked out), ``logout``,
``view_ecg``, ``download`` and ``resend`` (detail: the ECG's SOP Instance UID, the report's
kind). Details never hold PHI: UIDs, users' names, digests.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecg2age_dicom.store.models import AuditEvent


def record(session: Session, actor: str, action: str, detail: str = "") -> None:
    """Add one event (in the caller's transaction)."""
    session.add(
        AuditEvent(at=datetime.now(timezone.utc), actor=actor, action=action, detail=detail)
    )


def events(
    session: Session, since: datetime | None = None, newest: int | None = None
) -> list[AuditEvent]:
    """Every event (from ``since`` on), oldest first; or only the ``newest`` ones, newest
    first."""
    query = select(AuditEvent)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if newest is not None:
        query = query.order_by(AuditEvent.id.desc()).limit(newest)
    else:
        query = query.order_by(AuditEvent.id)
    return list(session.scalars(query))
