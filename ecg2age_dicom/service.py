"""The running service: wires store, model, pipeline workers, scheduler and listener.

Start order: migrations, model (with its warm-up), stale-claim recovery, workers, scheduler,
listener, then one log line ``listening on HOST:PORT as AE_TITLE``. Stop order on SIGTERM /
SIGINT: the listener stops accepting, workers finish the batch in hand, the scheduler finishes
the running delivery, then the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom import sr
from ecg2age_dicom.config import Settings
from ecg2age_dicom.model import ModelRuntime
from ecg2age_dicom.net.scp import start_listener
from ecg2age_dicom.pipeline import Pipeline, Receiver, Spool
from ecg2age_dicom.scheduler import recover_stale, start_scheduler
from ecg2age_dicom.store import open_store

log = logging.getLogger(__name__)


def _work(pipeline: Pipeline, wake: threading.Event, stop: threading.Event, poll_s: float) -> None:
    while not stop.is_set():
        try:
            if pipeline.run_once():
                continue
        except Exception:  # logged by the pipeline; the batch went back to the queue
            stop.wait(poll_s)
        wake.wait(poll_s)
        wake.clear()


def _start_workers(
    settings: Settings,
    sessions: sessionmaker[Session],
    spool: Spool,
    wake: threading.Event,
    stop: threading.Event,
) -> list[threading.Thread]:
    """The pipeline threads; none (and no model loaded) on a receive-only node."""
    if settings.pipeline.workers == 0:
        log.info("receive only: [pipeline] workers = 0, another process does the work")
        return []
    runtime = ModelRuntime.from_settings(settings.model)
    pipeline = Pipeline(
        sessions,
        runtime,
        spool,
        send_to=settings.sr.send_to,
        destinations=settings.destinations,
        sr_class=sr.SRClass(settings.sr.sop_class),
        batch_size=settings.model.batch_size,
        claim_timeout=timedelta(seconds=settings.pipeline.claim_timeout_s),
    )
    workers = [
        threading.Thread(
            target=_work,
            name=f"pipeline-{n}",
            daemon=True,
            args=(pipeline, wake, stop, settings.pipeline.poll_interval_s),
        )
        for n in range(settings.pipeline.workers)
    ]
    for worker in workers:
        worker.start()
    return workers


def serve(settings: Settings) -> int:
    """Run until SIGTERM / SIGINT; returns the exit code."""
    with open_store(settings.storage.database_url) as sessions:
        _run(settings, sessions)
    log.info("stopped")
    return 0


def _run(settings: Settings, sessions: sessionmaker[Session]) -> None:
    spool = Spool(settings.storage.spool_dir)
    recover_stale(sessions, settings)
    stop, wake = threading.Event(), threading.Event()
    workers = _start_workers(settings, sessions, spool, wake, stop)
    scheduler = start_scheduler(sessions, settings)
    server = start_listener(settings.listener, Receiver(sessions, spool, wake))
    listener = settings.listener
    log.info("listening on %s:%d as %s", listener.host, listener.port, listener.ae_title)

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    log.info("stopping: no new associations; finishing work in hand")
    server.shutdown()
    wake.set()
    for worker in workers:
        worker.join()
    scheduler.shutdown(wait=True)
