"""Scoring the archive: ``backfill --source NAME`` finds a PACS's ECGs and retrieves them into
the running service, politely, resumably, and without doing anything twice.

    list (one association: C-FIND studies with ECGs, then each study's ECG instances;
          a study already listed by an earlier run is not queried again)
      -> backfill_items "pending" (store.backfill)
      -> retrieve each, ``[backfill] max_concurrent`` associations, at most
         ``max_per_minute`` (evenly spaced), only inside ``windows``, and never more than
         ``max_backlog`` retrieved ECGs waiting for the service to score them
           C-MOVE: the source sends it to this service's listener;
           C-GET: it arrives on our association and goes through the listener's Receiver
      -> received_instances (spool + database before the source hears success) -> the
         service's workers score it and deliver its reports as for any ECG
      -> settled: "scored", or "refused" with the listener's or the quality gate's reason

An instance this service already holds is never retrieved: one it had before the backfill
found it is ``already_done``; one that arrived after (a killed run's last retrieval) is
``retrieved``. A failed retrieval stays ``pending`` with its reason, and is ``refused`` after
:data:`MAX_ATTEMPTS`. SIGINT / SIGTERM stop cleanly: the retrievals in hand finish, the
summary is printed, and the same command resumes. The scoring itself is the service's: the
backfill needs ``ecg2age-dicom serve`` running on the same database (it stops after
``stall_timeout_s`` without progress and says so).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as clock_time

from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom.config import Destination, Settings, Source
from ecg2age_dicom.errors import ConfigError
from ecg2age_dicom.net.qr import QueryRetrieve, SourceError, Study
from ecg2age_dicom.net.scp import receive_into
from ecg2age_dicom.net.scu import ReportSender
from ecg2age_dicom.receive import Receiver
from ecg2age_dicom.spool import Spool
from ecg2age_dicom.store import audit
from ecg2age_dicom.store import backfill as store
from ecg2age_dicom.store.models import BackfillItem, BackfillState
from ecg2age_dicom.store.queries import aware

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Retrievals of one instance that the source reports failed before it is ``refused``."""
SETTLE_INTERVAL_S = 0.5
PAGE = 200  # pending items read at a time


def window_open(windows: list[tuple[clock_time, clock_time]], moment: clock_time) -> bool:
    """Whether ``moment`` (local time) is inside one of ``windows`` (none: always)."""
    if not windows:
        return True
    for start, end in windows:
        if start < end and start <= moment < end:
            return True
        if start > end and (moment >= start or moment < end):  # past midnight
            return True
    return False


def next_opening(windows: list[tuple[clock_time, clock_time]], now: datetime) -> datetime:
    """When the next window opens after ``now`` (``now`` itself when one is open)."""
    if window_open(windows, now.time()):
        return now
    openings = []
    for start, _ in windows:
        opening = now.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
        openings.append(opening if opening > now else opening + timedelta(days=1))
    return min(openings)


class Pacer:
    """Evenly spaced starts, at most ``per_minute`` a minute, shared by threads."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 60.0 / per_minute
        self.clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, stopping: threading.Event) -> bool:
        """Wait for this caller's turn; False when ``stopping`` was set meanwhile."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        return not stopping.wait(max(slot - now, 0.0))


@dataclass
class Summary:
    """Where the backfill of a source's date range stands (every run so far), and what this
    run did."""

    found: int = 0
    retrieved_now: int = 0
    scored: int = 0
    already_done: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    pending: int = 0
    being_scored: int = 0
    stopped_by: str = ""

    @property
    def complete(self) -> bool:
        return not (self.pending or self.being_scored or self.stopped_by)

    def lines(self) -> list[str]:
        lines = [
            f"found          {self.found:>8}  ECG instances in the source for this range",
            f"retrieved      {self.retrieved_now:>8}  by this run",
            f"scored         {self.scored:>8}",
            f"already done   {self.already_done:>8}  held by this service before the backfill",
            f"refused        {sum(self.refused.values()):>8}",
        ]
        lines += [f"  {count:>6}  {reason}" for reason, count in self.refused.most_common()]
        if self.being_scored:
            lines.append(f"being scored   {self.being_scored:>8}  by the service")
        if self.pending:
            lines.append(f"not retrieved  {self.pending:>8}  yet: run the same command to resume")
        if self.stopped_by:
            lines.append(f"stopped: {self.stopped_by}")
        return lines


@dataclass(frozen=True)
class DryRun:
    """What a backfill would do, from the source's answers and this service's database."""

    studies: int
    found: int
    already_held: int


class Backfill:
    """One backfill of ``source`` between ``since`` and ``until`` (YYYYMMDD, either None)."""

    def __init__(
        self,
        settings: Settings,
        source: Source,
        sessions: sessionmaker[Session],
        *,
        since: str | None = None,
        until: str | None = None,
        stopping: threading.Event | None = None,
        progress: Callable[[int, int, str], None] | None = None,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.settings = settings
        self.source = source
        self.sessions = sessions
        self.since, self.until = since, until
        self.stopping = stopping or threading.Event()
        self.progress = progress or (lambda done, total, state: None)
        self.now = now
        self.windows = settings.backfill.parsed_windows()
        self.pacer = Pacer(settings.backfill.max_per_minute)
        self._problem = ""
        self._retrieved = 0
        self._listing_done = False
        # the service's backlog of our retrievals as last counted; when it last moved
        self._waiting = (0, 0.0, 0)  # (retrieved not scored, counted at, self._retrieved then)
        self._progress_at = 0.0
        self._lock = threading.Lock()
        self._receiver: Receiver | None = None
        if source.retrieve == "get":
            spool = Spool(settings.storage.spool_dir)
            spool.incoming.mkdir(parents=True, exist_ok=True)
            receive_into(spool.incoming)
            self._receiver = Receiver(sessions, spool, settings.listener.max_instance_bytes)
        self._check_listener()

    def _check_listener(self) -> None:
        allowed = self.settings.listener.allowed_calling_ae_titles
        if self.source.retrieve == "move" and allowed and self.source.ae_title not in allowed:
            raise ConfigError(
                f"source {self.source.name} sends its C-MOVE sub-operations as "
                f"{self.source.ae_title}, which [listener] allowed_calling_ae_titles refuses: "
                "add it there (and restart the service)"
            )

    def _check_service(self) -> None:
        """For C-MOVE, the service's listener must answer: the source sends the ECGs there.
        Asked as the source will call it (its AE title), so the allow-list is tried too."""
        listener = self.settings.listener
        if self.source.retrieve != "move" or listener.tls is not None:
            return  # C-GET brings them here; a TLS listener's certificate is for the PACS
        host = "127.0.0.1" if listener.host in ("0.0.0.0", "::", "") else listener.host
        target = Destination(
            name="listener", ae_title=listener.ae_title, host=host, port=listener.port
        )
        problem = ReportSender(self.source.ae_title, self.settings.delivery).echo(target)
        if problem:
            raise ConfigError(
                f"this service's listener does not answer C-ECHO ({problem}): start "
                "`ecg2age-dicom serve` first; C-MOVE has the source send the ECGs there"
            )

    def _connection(self) -> QueryRetrieve:
        return QueryRetrieve(
            self.settings.listener.ae_title,
            self.source,
            self.settings.delivery,
            self._receiver,
        )

    def dry_run(self) -> DryRun:
        """Query only: how many ECGs the range holds and how many this service has."""
        studies = found = held = 0
        with self._connection() as source, self.sessions() as session:
            for study in source.studies(self.since, self.until):
                if self.stopping.is_set():  # Ctrl-C: the counts so far
                    break
                studies += 1
                instances = source.ecg_instances(study)
                found += len(instances)
                held += len(store.received(session, [i.sop_instance_uid for i in instances]))
        return DryRun(studies, found, held)

    def run(self) -> Summary:
        """List, retrieve and wait for the scoring; returns the summary."""
        self._check_service()
        detail = f"source={self.source.name} since={self.since or '-'} until={self.until or '-'}"
        with self.sessions.begin() as session:
            audit.record(session, "cli", "backfill_start", detail)
        lister = threading.Thread(target=self._list, name="backfill-list", daemon=True)
        lister.start()
        self._retrieve_all(lister)
        lister.join()
        if not self.stopping.is_set():
            self._wait_for_scoring()
        summary = self.summary()
        with self.sessions.begin() as session:
            audit.record(
                session,
                "cli",
                "backfill_stop",
                f"{detail} found={summary.found} retrieved={summary.retrieved_now} "
                f"scored={summary.scored} refused={sum(summary.refused.values())} "
                f"already_done={summary.already_done} pending={summary.pending}",
            )
        return summary

    def _stop(self, problem: str) -> None:
        with self._lock:
            self._problem = self._problem or problem
        log.error("backfill stops: %s", problem)
        self.stopping.set()

    def _wait_for_window(self) -> bool:
        """Until a window is open; False when stopping."""
        while not self.stopping.is_set():
            now = self.now()
            opening = next_opening(self.windows, now)
            if opening <= now:
                return True
            self._report(f"waiting for the window at {opening:%H:%M}")
            self.stopping.wait(min((opening - now).total_seconds(), 30.0))
        return False

    def _list(self) -> None:
        """The lister thread: studies of the range, and each new study's ECG instances."""
        try:
            with self._connection() as source:
                if not self._wait_for_window():
                    return
                for study in source.studies(self.since, self.until):
                    if not self._wait_for_window():
                        return
                    self._list_study(source, study)
        except SourceError as exc:
            self._stop(exc.reason)
        except Exception as exc:  # the database, say: stop rather than report a full listing
            log.exception("listing failed")
            self._stop(f"listing failed: {type(exc).__name__}: {exc}")
        finally:
            self._listing_done = True

    def _list_study(self, source: QueryRetrieve, study: Study) -> None:
        with self.sessions.begin() as session:
            if store.is_listed(session, self.source.name, study.study_instance_uid):
                return
        found = source.ecg_instances(study)
        with self.sessions.begin() as session:
            store.record_study(
                session, self.source.name, study.study_instance_uid, study.study_date, found
            )

    def _retrieve_all(self, lister: threading.Thread) -> None:
        """Hand pending items to ``max_concurrent`` retrieving threads until the lister is
        done and nothing is pending, or the backfill stops."""
        config = self.settings.backfill
        connections: queue.Queue[QueryRetrieve] = queue.Queue()
        for _ in range(config.max_concurrent):
            connections.put(self._connection())
        in_flight: set[Future[None]] = set()
        last_id = 0
        with ThreadPoolExecutor(config.max_concurrent, thread_name_prefix="retrieve") as pool:
            while not self.stopping.is_set():
                listing_done = self._listing_done or not lister.is_alive()
                with self.sessions() as session:
                    batch = store.pending(
                        session, self.source.name, self.since, self.until, last_id, PAGE
                    )
                if not batch:
                    if listing_done:
                        break
                    self.stopping.wait(SETTLE_INTERVAL_S)
                    continue
                for item in batch:
                    last_id = item.id
                    if not self._room_for_more(in_flight):
                        break
                    in_flight.add(pool.submit(self._retrieve_guarded, item, connections))
                    in_flight = {f for f in in_flight if not f.done()}
            for future in in_flight:
                future.result()
        while not connections.empty():
            connections.get().close()

    def _room_for_more(self, in_flight: set[Future[None]]) -> bool:
        """Wait while every association is busy or the service's backlog is full; False
        when stopping (an item not handed out stays pending for the next run)."""
        config = self.settings.backfill
        while not self.stopping.is_set():
            busy = sum(not future.done() for future in in_flight)
            if busy < config.max_concurrent and self._settle() < config.max_backlog:
                return True
            self.stopping.wait(0.05 if busy >= config.max_concurrent else SETTLE_INTERVAL_S)
        return False

    def _settle(self) -> int:
        """How many retrieved ECGs the service still has to score: counted (and the
        finished ones settled) at most every :data:`SETTLE_INTERVAL_S`, estimated between.
        Stops the backfill when none was scored for ``stall_timeout_s``."""
        now = time.monotonic()
        waiting, counted_at, retrieved = self._waiting
        if now - counted_at < SETTLE_INTERVAL_S:
            return waiting + self._retrieved - retrieved
        with self.sessions.begin() as session:
            fresh, settled = store.settle(session, self.source.name)
        progress_at = now if settled or not fresh or not self._progress_at else self._progress_at
        self._waiting, self._progress_at = (fresh, now, self._retrieved), progress_at
        timeout = self.settings.backfill.stall_timeout_s
        if fresh and now - progress_at > timeout:
            self._stop(
                f"{fresh} retrieved ECGs were not scored in {timeout:g} s: is "
                "`ecg2age-dicom serve` running, with workers, on this database?"
            )
        self._report("retrieving")
        return fresh

    def _retrieve_guarded(
        self, item: BackfillItem, connections: queue.Queue[QueryRetrieve]
    ) -> None:
        """One retrieval; an unexpected failure stops the backfill with its reason (the item
        stays pending for the next run)."""
        try:
            self._retrieve_one(item, connections)
        except Exception as exc:
            log.exception("retrieval failed sop_instance_uid=%s", item.sop_instance_uid)
            self._stop(f"retrieval failed: {type(exc).__name__}: {exc}")

    def _retrieve_one(self, item: BackfillItem, connections: queue.Queue[QueryRetrieve]) -> None:
        if not (self._wait_for_window() and self.pacer.wait(self.stopping)):
            return
        found = store.Found(
            item.sop_instance_uid,
            item.study_instance_uid,
            item.series_instance_uid,
            item.sop_class_uid,
            item.study_date,
        )
        with self.sessions() as session:  # held already: never retrieved twice
            held = store.received_at(session, item.sop_instance_uid)
        if held is not None:
            found_at = aware(item.found_at)
            state = BackfillState.RETRIEVED if held >= found_at else BackfillState.ALREADY_DONE
            with self.sessions.begin() as session:
                store.finish_retrieval(session, item.id, state)
            return
        source = connections.get()
        try:
            problem = source.retrieve(found)
        except SourceError as exc:
            self._stop(exc.reason)
            return
        finally:
            connections.put(source)
        with self.sessions.begin() as session:
            arrived = store.received_at(session, item.sop_instance_uid) is not None
            if arrived:
                store.finish_retrieval(session, item.id, BackfillState.RETRIEVED)
            else:
                last = item.attempts + 1 >= MAX_ATTEMPTS
                state = BackfillState.REFUSED if last else BackfillState.PENDING
                reason = problem or "the source reported success, but nothing arrived"
                store.finish_retrieval(session, item.id, state, reason)
                log.warning(
                    "retrieval failed sop_instance_uid=%s attempt=%d: %s",
                    item.sop_instance_uid,
                    item.attempts + 1,
                    reason,
                )
        if arrived:
            with self._lock:
                self._retrieved += 1

    def _wait_for_scoring(self) -> None:
        while not self.stopping.is_set() and self._settle():
            self._report("waiting for the service to score")
            self.stopping.wait(SETTLE_INTERVAL_S)

    def _report(self, state: str) -> None:
        with self.sessions() as session:
            counts = store.counts(session, self.source.name, self.since, self.until)
        total = sum(counts.values())
        done = total - counts[BackfillState.PENDING] - counts[BackfillState.RETRIEVED]
        self.progress(done, total, state)

    def summary(self) -> Summary:
        """The range's items by state, this run's retrievals, and why it stopped."""
        with self.sessions() as session:
            counts = store.counts(session, self.source.name, self.since, self.until)
            refused = store.refusal_reasons(session, self.source.name, self.since, self.until)
        return Summary(
            found=sum(counts.values()),
            retrieved_now=self._retrieved,
            scored=counts[BackfillState.SCORED],
            already_done=counts[BackfillState.ALREADY_DONE],
            refused=refused,
            pending=counts[BackfillState.PENDING],
            being_scored=counts[BackfillState.RETRIEVED],
            stopped_by=self._problem or ("interrupted" if self.stopping.is_set() else ""),
        )
