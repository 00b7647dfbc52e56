"""The running service: the listener in this process, the pipeline in worker processes.

Decoding, prediction and SR encoding are mostly Python that holds the GIL, so a worker
thread beside the listener would take turns with it on one core; each of the
``[pipeline] workers`` worker processes (spawned, so TensorFlow never loads in the listener)
has its own model, pipeline loop and delivery job. They share the database, the spool, a
doorbell the listener rings when work arrives, and each worker a lifeline to the service:
when it closes (stop, or the service died) the worker stops.

Start order: migrations, spool tidy-up, stale-claim recovery, the HTTP health checks
(``[web]``: :mod:`ecg2age_dicom.web`; not ready until the listener is up), worker processes
(each loads the model and reports ready, or the service stops with the worker's error),
maintenance jobs, listener, then one log line ``listening on HOST:PORT as AE_TITLE``. A
worker process that dies is started again (``/readyz`` says so meanwhile).

Stop order on SIGTERM / SIGINT: ``/readyz`` turns 503, the listener stops accepting; each
worker finishes the batch in hand, starts no more deliveries and aborts the ones in flight
(they are retried at the next start); a worker still running ``[pipeline] stop_timeout_s``
after the stop began is killed (its claims are requeued at the next start: nothing is lost);
then the HTTP server stops and the process exits 0. A worker whose parent disappears
(kill -9) stops the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom import __version__, logs, metrics, sr
from ecg2age_dicom.config import Settings
from ecg2age_dicom.delivery import Deliverer
from ecg2age_dicom.doorbell import Doorbell
from ecg2age_dicom.errors import ConfigError, ModelError
from ecg2age_dicom.jobs import Jobs, recover_stale, start_jobs
from ecg2age_dicom.model import ModelRuntime, load_card
from ecg2age_dicom.net.scp import start_listener
from ecg2age_dicom.net.sockets import is_loopback
from ecg2age_dicom.pipeline import Pipeline
from ecg2age_dicom.receive import Receiver
from ecg2age_dicom.spool import Spool
from ecg2age_dicom.store import audit, open_store
from ecg2age_dicom.users import list_users
from ecg2age_dicom.web import ServiceState, WebServer, create_app, start_web

log = logging.getLogger(__name__)
_SPAWN = multiprocessing.get_context("spawn")
WATCH_INTERVAL_S = 1.0  # how often the service looks whether its workers are alive


def serve(settings: Settings) -> int:
    """Run until SIGTERM / SIGINT; returns the exit code."""
    # The workers' and the listener's metrics files, for this run only.
    with (
        open_store(settings.storage.database_url) as sessions,
        tempfile.TemporaryDirectory(prefix="ecg2age-metrics-") as metrics_dir,
    ):
        metrics.enable(Path(metrics_dir))  # before any worker starts: they inherit it
        # The digest says whether two runs had the same configuration, and shows no secret.
        digest = hashlib.sha256(settings.model_dump_json().encode()).hexdigest()
        detail = f"version={__version__} config_sha256={digest}"
        with sessions.begin() as session:
            audit.record(session, "service", "start", detail)
        try:
            _run(settings, sessions)
        finally:
            with sessions.begin() as session:
                audit.record(session, "service", "stop", detail)
    log.info("stopped")
    return 0


def _run(settings: Settings, sessions: sessionmaker[Session]) -> None:
    spool = Spool(settings.storage.spool_dir)
    spool.tidy()
    recover_stale(sessions, settings)
    # Signal handlers set a threading.Event: a multiprocessing one takes a lock that the
    # interrupted main thread may already hold.
    stopping, doorbell = threading.Event(), Doorbell()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    count = settings.pipeline.workers
    card = load_card(settings.model.card) if count else None
    state = ServiceState(count, (card.name, card.version) if card else None)
    # First, so that a port in use stops start-up before any model is loaded.
    app = create_app(settings, state, sessions)
    with sessions() as session:
        web = start_web(settings.web, app, len(list_users(session)))
    if web:
        log.info("health checks on http://%s:%d/readyz", settings.web.host, settings.web.port)
    workers = [_Worker.start(settings, n, doorbell) for n in range(count)]
    if not workers:
        log.info("receive only: [pipeline] workers = 0, another process does the work")
    jobs = start_jobs(
        sessions, settings, deliverer=None if workers else Deliverer(sessions, settings)
    )
    receiver = Receiver(sessions, spool, settings.listener.max_instance_bytes, doorbell)
    try:
        server = start_listener(settings.listener, receiver, spool.incoming)
    except ConfigError:  # the port in use: stop what started, then say why
        _stop(settings, workers, jobs, web)
        raise
    state.update(listener_up=True, workers_ready=len(workers))
    listener = settings.listener
    if not listener.allowed_calling_ae_titles and not is_loopback(listener.host):
        log.warning(
            "any calling AE title may store on %s:%d: set [listener] "
            "allowed_calling_ae_titles to the carts and archives that send ECGs",
            listener.host,
            listener.port,
        )
    log.info("listening on %s:%d as %s", listener.host, listener.port, listener.ae_title)

    while not stopping.wait(WATCH_INTERVAL_S):
        state.update(workers_ready=sum(worker.process.is_alive() for worker in workers))
        for n, worker in enumerate(workers):
            if not worker.process.is_alive():
                code = worker.process.exitcode
                log.error("worker %d exited with code %s; starting it again", n, code)
                try:
                    workers[n] = _Worker.start(settings, n, doorbell)
                except ModelError:
                    log.exception("worker %d could not start again; stopping", n)
                    stopping.set()
        state.update(workers_ready=sum(worker.process.is_alive() for worker in workers))
    log.info("stopping: no new associations; finishing work in hand")
    state.update(listener_up=False)
    server.shutdown()
    _stop(settings, workers, jobs, web)


def _stop(settings: Settings, workers: list[_Worker], jobs: Jobs, web: WebServer | None) -> None:
    """Each worker finishes its batch (killed at the stop timeout), the jobs end, and last
    the HTTP server (an orchestrator sees "not ready" until the end)."""
    deadline = time.monotonic() + settings.pipeline.stop_timeout_s
    for worker in workers:
        worker.lifeline.close()
    for number, worker in enumerate(workers):
        worker.join_until(deadline, number)
    jobs.shutdown()
    if web:
        web.stop()


@dataclass
class _Worker:
    """A worker process and the parent's end of its lifeline (closing it stops the worker)."""

    process: SpawnProcess
    lifeline: Connection

    @classmethod
    def start(cls, settings: Settings, number: int, doorbell: Doorbell) -> _Worker:
        """Start one worker process and wait until its model is loaded.

        Raises
        ------
        ModelError
            The worker could not load the model (its reason), or died while starting.
        """
        ready_in, ready_out = _SPAWN.Pipe(duplex=False)
        lifeline_in, lifeline_out = _SPAWN.Pipe(duplex=False)
        process = _SPAWN.Process(
            target=_worker_main,
            args=(settings, number, doorbell, ready_out, lifeline_in, logging.getLogger().level),
            name=f"ecg2age-worker-{number}",
        )
        process.start()
        ready_out.close()
        lifeline_in.close()
        try:
            problem = ready_in.recv()
        except EOFError:  # died before reporting: its traceback is on stderr
            process.join()
            problem = f"worker {number} exited with code {process.exitcode} while starting"
        finally:
            ready_in.close()
        if problem is not None:
            lifeline_out.close()
            process.join()
            raise ModelError(problem)
        return cls(process, lifeline_out)

    def join_until(self, deadline: float, number: int) -> None:
        """Wait for the worker (its lifeline closed) until ``deadline``; then kill it."""
        self.process.join(max(deadline - time.monotonic(), 0))
        if self.process.is_alive():
            log.error("worker %d still running at the stop timeout: killed", number)
            self.process.kill()
            self.process.join()


def _worker_main(
    settings: Settings,
    number: int,
    doorbell: Doorbell,
    ready: Connection,
    lifeline: Connection,
    log_level: int,
) -> None:
    """A worker process: load the model, then claim, predict, report and deliver until told
    to stop (the parent closes the lifeline, or dies, or SIGTERM)."""
    logs.configure(log_level, prefix=f"[worker {number}] ")
    metrics.enable()  # into the folder the service made (inherited environment)
    # A sender waits for the listener's answer to every C-STORE; a worker's backlog waits on
    # disk. On shared cores the listener comes first.
    os.nice(settings.pipeline.worker_niceness)
    stopping = threading.Event()
    # Ctrl-C reaches the whole process group: the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        runtime = ModelRuntime.from_settings(settings.model)
    except Exception as exc:
        reason = exc.reason if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}"
        ready.send(f"worker {number} could not load the model: {reason}")
        return
    with open_store(settings.storage.database_url, migrate=False) as sessions:
        pipeline = Pipeline(
            sessions,
            runtime,
            Spool(settings.storage.spool_dir),
            settings.sr.send_to,
            outputs=settings.report.outputs,
            sr_class=sr.SRClass(settings.sr.sop_class),
            paper=settings.report.paper,
            batch_size=settings.model.batch_size,
            claim_timeout=timedelta(seconds=settings.pipeline.claim_timeout_s),
        )
        jobs = start_jobs(
            sessions, settings, deliverer=Deliverer(sessions, settings), maintain=False
        )
        threading.Thread(
            target=_stop_at_end_of_lifeline,
            args=(lifeline, stopping, doorbell),
            name="lifeline",
            daemon=True,
        ).start()
        ready.send(None)
        ready.close()
        log.info("worker %d ready", number)
        _work(
            pipeline,
            jobs.wake_delivery,
            doorbell,
            stopping,
            settings.pipeline.poll_interval_s,
            settings.model.max_batch_wait_ms / 1000,
        )
        jobs.shutdown()


def _work(
    pipeline: Pipeline,
    reports_made: Callable[[], None],
    doorbell: Doorbell,
    stopping: threading.Event,
    poll_s: float,
    gather_s: float,
) -> None:
    """Claim and process batches while there is work, calling ``reports_made`` after each;
    when idle, wait for the doorbell, then ``gather_s`` more so that the start of a burst
    makes one batch rather than many."""
    while not stopping.is_set():
        try:
            if pipeline.run_once():
                reports_made()
                continue
        except Exception:  # logged by the pipeline; the batch went back to the queue
            stopping.wait(poll_s)
        if doorbell.wait(poll_s):
            stopping.wait(gather_s)


def _stop_at_end_of_lifeline(
    lifeline: Connection, stopping: threading.Event, doorbell: Doorbell
) -> None:
    with contextlib.suppress(EOFError):  # closed by the parent, or it is gone (kill -9)
        lifeline.recv()
    stopping.set()
    doorbell.ring()  # wake this worker's loop now
