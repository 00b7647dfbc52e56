"""Delivering reports: due deliveries claimed, sent per destination, each outcome recorded.

Due deliveries are claimed (``pending`` -> ``sending``), grouped by destination and sent over
one association per destination; a retryable failure is tried again after an exponential
backoff with jitter (``initial_backoff_s`` doubling up to ``max_backoff_s``), and after
``max_attempts`` the delivery is ``delivery_failed`` (``ecg2age-dicom resend`` retries it by
hand). A permanent refusal by the destination fails at once. Each delivery names its
destination as ``[sr] send_to`` did; :meth:`Settings.destination` resolves it (and
"@sender") at each attempt, and a name with no ``[[destinations]]`` entry fails with that
reason.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom import metrics
from ecg2age_dicom.config import Destination, Settings
from ecg2age_dicom.net.scu import Outcome, ReportSender, SendResult
from ecg2age_dicom.store import queries

log = logging.getLogger(__name__)
BURST = 64  # deliveries claimed at a time

Sender = Callable[[Destination, Sequence[str]], list[SendResult]]
"""Sends report files to one destination: a :class:`SendResult` per file."""


def backoff_s(attempts: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before the next try after ``attempts`` failed ones: doubling, +-20 % jitter."""
    base = min(max_s, initial_s * 2 ** max(attempts - 1, 0))
    return min(max_s, base * rng.uniform(0.8, 1.2))


class Deliverer:
    """Sends due reports and records each outcome.

    ``send`` defaults to a :class:`~ecg2age_dicom.net.scu.ReportSender` calling as the
    listener's AE title with the ``[delivery]`` timeouts; :meth:`close` stops it.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        send: Sender | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self._sender = (
            ReportSender(settings.listener.ae_title, settings.delivery) if send is None else None
        )
        self.send: Sender = send or self._sender  # type: ignore[assignment]
        self.rng = rng or random.Random()
        self._closed = False

    def close(self) -> None:
        """Start no more sends; abort the associations in flight (their deliveries are
        recorded as to be retried)."""
        self._closed = True
        if self._sender is not None:
            self._sender.close()

    def run_until_done(self) -> int:
        """Send bursts until nothing is due (or :meth:`close`); returns how many were tried."""
        total = 0
        while not self._closed and (tried := self.run_once()):
            total += tried
        return total

    def run_once(self) -> int:
        """Claim and send one burst of due deliveries; returns how many were attempted."""
        with self.sessions.begin() as session:
            due = queries.claim_due_deliveries(session, BURST)
        if not due:
            return 0
        groups: dict[Destination, list[queries.DueDelivery]] = defaultdict(list)
        outcomes: list[tuple[queries.DueDelivery, SendResult]] = []
        for item in due:
            destination = self.settings.destination(item.destination, item.calling_ae_title)
            if destination is not None:
                groups[destination].append(item)
                continue
            reason = (
                f"no [[destinations]] entry for '{item.destination}'"
                f" (calling AE title '{item.calling_ae_title}')"
            )
            outcomes.append((item, SendResult(item.report_path, Outcome.PERMANENT, reason)))
        for destination, items in groups.items():
            with metrics.timed("delivery"):
                results = self.send(destination, [item.report_path for item in items])
            outcomes += list(zip(items, results, strict=True))
        self._record(outcomes)
        return len(due)

    def _record(self, outcomes: list[tuple[queries.DueDelivery, SendResult]]) -> None:
        policy = self.settings.delivery
        now = queries.utcnow()
        attempts = []
        for item, result in outcomes:
            retry_at = None
            tried = item.attempts + 1
            if result.outcome is Outcome.RETRY and tried < policy.max_attempts:
                delay = backoff_s(tried, policy.initial_backoff_s, policy.max_backoff_s, self.rng)
                retry_at = now + timedelta(seconds=delay)
            attempt = queries.Attempt(
                item.delivery_id,
                result.outcome is Outcome.DELIVERED,
                result.detail or None,
                retry_at,
            )
            attempts.append(attempt)
            metrics.delivered(item.destination, attempt.status.value)
            log.log(
                logging.INFO if attempt.delivered else logging.WARNING,
                "delivery %s=%s destination=%s attempt=%d status=%s %s",
                item.report_kind,
                item.report_sop_instance_uid,
                item.destination,
                tried,
                attempt.status.value,
                result.detail,
            )
        with self.sessions.begin() as session:
            queries.finish_deliveries(session, attempts)
