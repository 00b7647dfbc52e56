"""The HTTP side of the service (FastAPI): the operations console, health checks and metrics.

``GET /healthz``: 200 ``{"status": "alive"}`` while the process answers. ``GET /readyz``: 200
when the listener is up, the database answers, the spool is writable and every worker has
its model loaded, else 503; the body names each check (:func:`~ecg2age_dicom.web.health.
readiness`). Neither needs a login: they hold no PHI. ``GET /metrics``: Prometheus text
(:mod:`ecg2age_dicom.metrics`) for a logged-in user, HTTP Basic with a user's password, or
anyone with ``[web] metrics_public = true``. Every other page is the console
(:mod:`~ecg2age_dicom.web.pages`), behind a login (:mod:`~ecg2age_dicom.web.auth`).

Every answer carries a Content-Security-Policy that allows no script and nothing from another
site, and forbids framing; pages with PHI are not cached.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker
from starlette.middleware.sessions import SessionMiddleware

from ecg2age_dicom import __version__, metrics
from ecg2age_dicom.config import Settings
from ecg2age_dicom.spool import Spool
from ecg2age_dicom.store import queries
from ecg2age_dicom.users import LockoutPolicy
from ecg2age_dicom.web import auth
from ecg2age_dicom.web.health import ServiceState, readiness
from ecg2age_dicom.web.pages import Console, console_router

STATIC = Path(__file__).parent / "static"
SESSION_COOKIE = "ecg2age_session"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
PUBLIC = ("/healthz", "/readyz", "/static/")


def create_app(settings: Settings, state: ServiceState, sessions: sessionmaker[Session]) -> FastAPI:
    """The application for one running service."""
    web = settings.web
    app = FastAPI(title="ecg2age-dicom", version=__version__, docs_url=None, redoc_url=None)
    app.openapi_url = None  # no schema of the console for anyone who asks
    incoming = Spool(settings.storage.spool_dir).incoming
    policy = LockoutPolicy(web.max_failed_logins, timedelta(minutes=web.lockout_minutes))
    console = Console(settings, state, sessions, policy)
    app.state.console = console  # the pages' login dependencies find the database here

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(HEADERS)
        if not request.url.path.startswith(PUBLIC):
            response.headers["Cache-Control"] = "no-store"
        return response

    app.add_middleware(
        SessionMiddleware,
        secret_key=auth.secret_key(web.secret_key_file),
        session_cookie=SESSION_COOKIE,
        max_age=round(web.session_hours * 3600),
        same_site="strict",
        https_only=web.tls is not None,
    )

    @app.exception_handler(auth.LoginRequired)
    def login_required(request: Request, exc: auth.LoginRequired) -> Response:
        return RedirectResponse(exc.path, status_code=303)

    @app.exception_handler(auth.Forbidden)
    def forbidden(request: Request, exc: auth.Forbidden) -> Response:
        return console.error_page(request, 403, str(exc))

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
    def prometheus(request: Request) -> Response:
        if not (
            web.metrics_public
            or auth.basic_user(request, sessions, policy)
            or console.session_user(request)
        ):
            return JSONResponse(
                {"detail": "log in, or use HTTP Basic with a console user's password"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="ecg2age-dicom metrics"'},
            )

        def depth() -> list[tuple[str, int]]:
            with sessions() as session:
                return queries.queue_depth(session)

        body, content_type = metrics.exposition(depth, state.model)
        return Response(body, media_type=content_type)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(console_router(console))
    return app
