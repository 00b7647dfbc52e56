"""The service's Prometheus metrics, counted in every process (prometheus-client's
multi-process mode) and read together by ``GET /metrics``.

==================================  =========  ======================  ==========================
metric                              type       labels                  counted by
==================================  =========  ======================  ==========================
``ecg2age_received_total``          counter    outcome                 the listener, per C-STORE
``ecg2age_predictions_total``       counter    model, version          a worker, per ECG scored
``ecg2age_deliveries_total``        counter    destination, outcome    a worker, per attempt
``ecg2age_stage_seconds``           histogram  stage                   decode and report per ECG,
                                                                       predict per batch,
                                                                       delivery per burst
``ecg2age_queue_depth``             gauge      status                  the database, at scrape
``ecg2age_model_info``              gauge      name, version           the model card (value 1)
==================================  =========  ======================  ==========================

:func:`enable` (the service, before it starts any worker) empties a folder and points
``PROMETHEUS_MULTIPROC_DIR`` at it; workers inherit it and call :func:`enable` too. Outside
the service (``predict``, tests) nothing is enabled and every count is a no-op.
prometheus-client is imported only by :func:`enable`, after the variable is set, as its
multi-process mode requires. Labels hold outcomes, model names and destination names from the
configuration, never a UID or a value from the network.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV = "PROMETHEUS_MULTIPROC_DIR"
STAGES = ("decode", "predict", "report", "delivery")


@dataclass(frozen=True)
class _Metrics:
    received: Any
    predictions: Any
    deliveries: Any
    stage_seconds: Any


_enabled: _Metrics | None = None


def enable(folder: Path | None = None) -> None:
    """Count in this process. ``folder``: the service's metrics folder, emptied and made
    the multi-process folder (the service's main process); None: the one inherited (a
    worker)."""
    global _enabled
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ[ENV] = str(folder)
    from prometheus_client import Counter, Histogram

    # Not in the default registry: the multi-process files are what /metrics reads.
    _enabled = _Metrics(
        Counter("ecg2age_received", "Instances received, by outcome", ["outcome"], registry=None),
        Counter(
            "ecg2age_predictions", "ECGs scored, by model", ["model", "version"], registry=None
        ),
        Counter(
            "ecg2age_deliveries",
            "Delivery attempts, by outcome",
            ["destination", "outcome"],
            registry=None,
        ),
        Histogram("ecg2age_stage_seconds", "Time spent per stage", ["stage"], registry=None),
    )


def received(outcome: str) -> None:
    if _enabled:
        _enabled.received.labels(outcome).inc()


def predicted(model: str, version: str, count: int = 1) -> None:
    if _enabled and count:
        _enabled.predictions.labels(model, version).inc(count)


def delivered(destination: str, outcome: str) -> None:
    if _enabled:
        _enabled.deliveries.labels(destination, outcome).inc()


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Observe the time the ``with`` block takes as ``stage``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if _enabled:
            _enabled.stage_seconds.labels(stage).observe(time.perf_counter() - start)


def exposition(
    queue_depth: Callable[[], Iterable[tuple[str, int]]], model: tuple[str, str] | None
) -> tuple[bytes, str]:
    """(body, content type) of ``/metrics``: every process's counts, the queue depth by
    status from ``queue_depth()`` and the model's info."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.multiprocess import MultiProcessCollector

    class _AtScrape:
        def collect(self) -> Iterator[GaugeMetricFamily]:
            depth = GaugeMetricFamily(
                "ecg2age_queue_depth", "Received instances by status", labels=["status"]
            )
            for status, count in queue_depth():
                depth.add_metric([status], count)
            yield depth
            if model:
                info = GaugeMetricFamily(
                    "ecg2age_model_info", "The model in use", labels=["name", "version"]
                )
                info.add_metric(list(model), 1)
                yield info

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(_AtScrape())
    return generate_latest(registry), CONTENT_TYPE_LATEST
