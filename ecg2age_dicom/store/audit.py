"""The audit trail: who did what and when, append-only (the database refuses UPDATE and DELETE
on ``audit_events``: migration 0005).

Actions so far: ``start`` and ``stop`` of the service (detail: its version and a digest of its
configuration), ``user_add`` and ``user_remove`` (detail: the user's name and role). Details
never hold PHI: UIDs, users' names, digests.
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


def events(session: Session, since: datetime | None = None) -> list[AuditEvent]:
    """Every event (from ``since`` on), oldest first."""
    query = select(AuditEvent).order_by(AuditEvent.id)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    return list(session.scalars(query))
