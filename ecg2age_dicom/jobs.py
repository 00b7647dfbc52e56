"""Background jobs on APScheduler: delivery, stale-claim recovery, spool clean-up.

:func:`start_jobs` starts a scheduler with, as asked: the delivery job (every
``[delivery] interval_s``, and at once when :meth:`Jobs.wake_delivery` is called after new
reports; APScheduler runs one instance at a time, so one burst is sent at a time per process,
and a running job sends until nothing is due), and the maintenance jobs (stale-claim recovery
every half ``claim_timeout_s``, spool clean-up hourly).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom.config import Settings
from ecg2age_dicom.delivery import Deliverer
from ecg2age_dicom.store import queries

log = logging.getLogger(__name__)
DELIVERY_JOB = "deliver"


def recover_stale(sessions: sessionmaker[Session], settings: Settings) -> None:
    """Give claims of dead workers / senders back to their queues."""
    older = timedelta(seconds=settings.pipeline.claim_timeout_s)
    with sessions.begin() as session:
        claims = queries.requeue_stale_claims(session, older)
        sends = queries.requeue_stale_deliveries(session, older)
    if claims or sends:
        log.info("requeued stale work instances=%d deliveries=%d", claims, sends)


def clean_spool(sessions: sessionmaker[Session], retention_days: float) -> int:
    """Delete spool files of work delivered everywhere more than ``retention_days`` ago."""
    cutoff = queries.utcnow() - timedelta(days=retention_days)
    removed = 0
    with sessions.begin() as session:
        for report, instance in queries.delivered_before(session, cutoff):
            for owner, attribute in ((report, "path"), (instance, "spool_path")):
                path = getattr(owner, attribute)
                if path:
                    Path(path).unlink(missing_ok=True)
                    setattr(owner, attribute, "")
                    removed += 1
    if removed:
        log.info("spool clean-up removed=%d files", removed)
    return removed


@dataclass
class Jobs:
    """A started scheduler and, when it delivers, its deliverer."""

    scheduler: BackgroundScheduler
    deliverer: Deliverer | None

    def wake_delivery(self) -> None:
        """Run the delivery job now (new reports); a no-op when it is running already."""
        if self.deliverer is not None:
            self.scheduler.modify_job(DELIVERY_JOB, next_run_time=datetime.now().astimezone())

    def shutdown(self) -> None:
        """Start no more sends, abort the ones in flight, and wait for running jobs."""
        if self.deliverer is not None:
            self.deliverer.close()
        self.scheduler.shutdown(wait=True)


def start_jobs(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    deliverer: Deliverer | None = None,
    maintain: bool = True,
) -> Jobs:
    """Start the background jobs (module docstring): delivery with ``deliverer`` when given,
    maintenance when ``maintain``."""
    scheduler = BackgroundScheduler(
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
    )
    if deliverer is not None:
        scheduler.add_job(
            deliverer.run_until_done,
            "interval",
            seconds=settings.delivery.interval_s,
            id=DELIVERY_JOB,
            next_run_time=datetime.now().astimezone(),
        )
    if maintain:
        scheduler.add_job(
            recover_stale,
            "interval",
            args=[sessions, settings],
            seconds=max(settings.pipeline.claim_timeout_s / 2, 1),
            id="recover",
        )
        scheduler.add_job(
            clean_spool,
            "interval",
            args=[sessions, settings.storage.retention_days],
            hours=1,
            id="clean-spool",
            next_run_time=datetime.now().astimezone(),
        )
    scheduler.start()
    return Jobs(scheduler, deliverer)
