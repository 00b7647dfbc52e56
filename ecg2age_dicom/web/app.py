"""The HTTP side of the service (FastAPI): health checks and metrics for monitoring.

``GET /healthz``: 200 ``{"status": "alive"}`` while the process answers. ``GET /readyz``: 200
when the listener is up, the database answers, the spool is writable and every worker has
its model loaded, else 503; the body names each check (:func:`~ecg2age_dicom.web.health.
readiness`). Neither needs a login: they hold no PHI. ``GET /metrics``: Prometheus text
(:mod:`ecg2age_dicom.metrics`), only with ``[web] metrics_public = true`` until logins exist
(401 otherwise).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom import __version__, metrics
from ecg2age_dicom.store import queries
from ecg2age_dicom.web.health import ServiceState, readiness


def create_app(
    state: ServiceState,
    sessions: sessionmaker[Session],
    incoming: Path,
    *,
    metrics_public: bool = False,
) -> FastAPI:
    """The application for one running service."""
    app = FastAPI(title="ecg2age-dicom", version=__version__, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    # A plain function: FastAPI runs it in its thread pool, so that the database check
    # never blocks the event loop.
    @app.get("/readyz")
    def readyz() -> JSONResponse:
        ready, body = readiness(state, sessions, incoming)
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    def prometheus() -> Response:
        if not metrics_public:
            return JSONResponse(
                {
                    "detail": "/metrics needs a login, and logins are not built yet: set [web] "
                    "metrics_public = true to serve it without one"
                },
                status_code=401,
            )

        def depth() -> list[tuple[str, int]]:
            with sessions() as session:
                return queries.queue_depth(session)

        body, content_type = metrics.exposition(depth, state.model)
        return Response(body, media_type=content_type)

    return app
