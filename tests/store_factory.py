"""Put rows in a test database the way the pipeline does: received, claimed, predicted."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom.store import ReceivedInstance, queries


def predicted(
    sessions: sessionmaker[Session],
    instance: queries.NewInstance,
    sr_uid: str,
    sr_path: str,
    destinations: Sequence[str],
    age_years: float = 50.0,
) -> ReceivedInstance:
    """Record ``instance``, claim it and save model M 1's prediction with its report and one
    pending delivery per destination; returns the instance row."""
    with sessions.begin() as session:
        queries.record_received(session.connection(), instance)
    with sessions.begin() as session:
        (row,) = queries.claim_received(session, "w", 1)
        queries.save_results(
            session,
            [
                queries.NewResult(
                    row.id,
                    "M",
                    "1",
                    age_years,
                    None,
                    None,
                    (),
                    [queries.NewReport("sr", sr_uid, sr_path)],
                    destinations,
                )
            ],
        )
    return row
