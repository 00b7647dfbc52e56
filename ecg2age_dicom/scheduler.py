"""Background jobs on APScheduler: SR delivery with retries, stale-claim recovery, spool clean-up.

Delivery: due deliveries are claimed (``pending`` -> ``sending``), grouped by destination and
sent over one association per destination; a retryable failure is tried again after an
exponential backoff with jitter (``initial_backoff_s`` doubling up to ``max_backoff_s``), and
after ``max_attempts`` the delivery is ``delivery_failed`` (``ecg2age-dicom resend`` retries
it by hand). A permanent refusal by the destination fails at once.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom.config import SEND_BACK_TO_SENDER, Destination, Settings
from ecg2age_dicom.net.scu import Outcome, SendResult, send_files
from ecg2age_dicom.store import queries

log = logging.getLogger(__name__)
BURST = 64  # reports claimed per delivery run

Sender = Callable[[str, Destination, Sequence[str]], list[SendResult]]


def backoff_s(attempts: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before the next try after ``attempts`` failed ones: doubling, +-20 % jitter."""
    base = min(max_s, initial_s * 2 ** max(attempts - 1, 0))
    return min(max_s, base * rng.uniform(0.8, 1.2))


class Deliverer:
    """Sends due reports and records each outcome."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        send: Sender = send_files,
        rng: random.Random | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.send = send
        self.rng = rng or random.Random()
        self.by_name = {d.name: d for d in settings.destinations}
        self.by_ae = {d.ae_title: d for d in settings.destinations}
        # One burst at a time per process: some PACS serve one association at a time.
        self._sending = threading.Lock()

    def _destination(self, due: queries.DueDelivery) -> Destination | None:
        if due.destination == SEND_BACK_TO_SENDER:
            return self.by_ae.get(due.calling_ae_title)
        return self.by_name.get(due.destination)

    def run_if_idle(self) -> int:
        """:meth:`run_once` unless a burst is being sent already (then 0)."""
        if not self._sending.acquire(blocking=False):
            return 0
        try:
            return self._run()
        finally:
            self._sending.release()

    def run_once(self) -> int:
        """Claim and send one burst of due deliveries; returns how many were attempted."""
        with self._sending:
            return self._run()

    def _run(self) -> int:
        with self.sessions.begin() as session:
            due = queries.claim_due_deliveries(session, BURST)
        if not due:
            return 0
        groups: dict[str, list[queries.DueDelivery]] = defaultdict(list)
        outcomes: list[tuple[queries.DueDelivery, SendResult]] = []
        for item in due:
            destination = self._destination(item)
            if destination is None:
                reason = (
                    f"no [[destinations]] entry for '{item.destination}'"
                    f" (calling AE title '{item.calling_ae_title}')"
                )
                outcomes.append((item, SendResult(item.report_path, Outcome.PERMANENT, reason)))
            else:
                groups[destination.name].append(item)
        for name, items in groups.items():
            results = self.send(
                self.settings.listener.ae_title,
                self.by_name[name],
                [item.report_path for item in items],
            )
            outcomes += list(zip(items, results, strict=True))
        self._record(outcomes)
        return len(due)

    def _record(self, outcomes: list[tuple[queries.DueDelivery, SendResult]]) -> None:
        policy = self.settings.delivery
        now = queries.utcnow()
        with self.sessions.begin() as session:
            for item, result in outcomes:
                retry_at = None
                attempts = item.attempts + 1
                if result.outcome is Outcome.RETRY and attempts < policy.max_attempts:
                    delay = backoff_s(
                        attempts, policy.initial_backoff_s, policy.max_backoff_s, self.rng
                    )
                    retry_at = now + timedelta(seconds=delay)
                status = queries.finish_delivery(
                    session,
                    item.delivery_id,
                    result.outcome is Outcome.DELIVERED,
                    result.detail or None,
                    retry_at,
                )
                log.log(
                    logging.INFO if result.outcome is Outcome.DELIVERED else logging.WARNING,
                    "delivery sr=%s destination=%s attempt=%d status=%s %s",
                    item.sr_sop_instance_uid,
                    item.destination,
                    attempts,
                    status.value,
                    result.detail,
                )


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


def start_scheduler(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    deliverer: Deliverer | None = None,
    maintain: bool = True,
) -> BackgroundScheduler:
    """Start the background jobs; ``shutdown(wait=True)`` stops them after the running ones.

    ``deliverer`` (when given) sends due reports every ``[delivery] interval_s``; ``maintain``
    adds stale-claim recovery and the hourly spool clean-up.
    """
    scheduler = BackgroundScheduler(
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
    )
    if deliverer is not None:
        scheduler.add_job(
            deliverer.run_if_idle,
            "interval",
            seconds=settings.delivery.interval_s,
            id="deliver",
            next_run_time=datetime.now(),
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
            next_run_time=datetime.now(),
        )
    scheduler.start()
    return scheduler
