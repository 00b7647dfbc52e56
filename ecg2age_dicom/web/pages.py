"""The console's pages: login, overview, worklist, ECG detail (trace, reports, Resend), model,
cohort (and its CSV) and, for admins, the audit trail.

Each page needs a login (:mod:`~ecg2age_dicom.web.auth`); Resend and the audit page need the
admin role; every POST needs the session's CSRF token. What a user saw or took is audited:
login, failed login, logout, an ECG's detail, each download, each resend. Templates are
Jinja2 with autoescaping: a Patient's Name ``<img src=x onerror=...>`` is shown as text.
Values from the URL are checked before they reach a query (UIDs by
:func:`~ecg2age_dicom.identity.is_valid_uid`, dates by ``date.fromisoformat``, report kinds
by :data:`~ecg2age_dicom.outputs.KINDS`).
"""

from __future__ import annotations

import csv
import io
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom import waveform
from ecg2age_dicom.config import Settings
from ecg2age_dicom.dicomfile import read_dataset
from ecg2age_dicom.errors import Ecg2AgeError
from ecg2age_dicom.identity import is_valid_uid
from ecg2age_dicom.model import ModelCard, load_card
from ecg2age_dicom.net.scu import ReportSender
from ecg2age_dicom.outputs import KINDS
from ecg2age_dicom.pdf.page import header_fields
from ecg2age_dicom.store import audit, console, queries
from ecg2age_dicom.store.models import AuditEvent, Role, User
from ecg2age_dicom.users import LockoutPolicy, LoginRefused, authenticate
from ecg2age_dicom.web import auth
from ecg2age_dicom.web.health import ServiceState
from ecg2age_dicom.web.trace import trace_svg

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
ECHO_WAIT_S = 3.0  # the overview waits this long for the destinations' C-ECHO answers
ECHO_CACHE_S = 60.0
PLOTS = ("calibration.png", "error_by_age.png")  # of a model card's folder, shown on its page
AUDIT_PAGE_ROWS = 500


@dataclass
class Console:
    """What the pages need: the settings, the service's state, the database, the lockout."""

    settings: Settings
    state: ServiceState
    sessions: sessionmaker[Session]
    policy: LockoutPolicy
    _echoes: dict[str, tuple[float, str]] = field(default_factory=dict)
    _echo_lock: threading.Lock = field(default_factory=threading.Lock)

    def session_user(self, request: Request) -> User | None:
        try:
            return auth.current_user(request, self.sessions)
        except auth.LoginRequired:
            return None

    def render(self, request: Request, name: str, user: User | None, **values: Any) -> Response:
        context = {
            "user": user,
            "csrf": auth.csrf_token(request),
            "is_admin": user is not None and user.role == Role.ADMIN,
            "page": name.removesuffix(".html"),
            **values,
        }
        return TEMPLATES.TemplateResponse(request, name, context)

    def error_page(self, request: Request, code: int, message: str) -> Response:
        response = self.render(
            request, "error.html", self.session_user(request), code=code, message=message
        )
        response.status_code = code
        return response

    def record(self, actor: str, action: str, detail: str = "") -> None:
        with self.sessions.begin() as session:
            audit.record(session, actor, action, detail)

    def reachability(self) -> dict[str, str]:
        """Each destination's C-ECHO answer ("" reachable, else why not), at most
        :data:`ECHO_CACHE_S` old; what has not answered within :data:`ECHO_WAIT_S` is said so."""
        now = time.monotonic()
        with self._echo_lock:
            fresh = {
                name: reason
                for name, (at, reason) in self._echoes.items()
                if now - at < ECHO_CACHE_S
            }
        stale = [d for d in self.settings.destinations if d.name not in fresh]
        if stale:
            sender = ReportSender(self.settings.listener.ae_title, self.settings.delivery)
            pool = ThreadPoolExecutor(max_workers=len(stale), thread_name_prefix="echo")
            futures = {pool.submit(sender.echo, d): d.name for d in stale}
            done, _ = wait(futures, timeout=ECHO_WAIT_S)
            pool.shutdown(wait=False)  # the rest end within [delivery]'s timeouts
            for future, name in futures.items():
                if future in done:
                    fresh[name] = future.result()
                    with self._echo_lock:
                        self._echoes[name] = (now, fresh[name])
                else:
                    fresh[name] = f"no answer to C-ECHO within {ECHO_WAIT_S:.0f} s"
        return fresh

    def card(self) -> ModelCard | str:
        try:
            return load_card(self.settings.model.card)
        except Ecg2AgeError as exc:
            return str(exc)


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class TraceView:
    """What the detail page shows of a spooled ECG: its header, its trace, or why not."""

    fields: list[tuple[str, str]]
    svg: Markup | None = None
    derived: bool = False
    missing: str = ""


def _trace(spool_path: str) -> TraceView:
    path = Path(spool_path)
    if not path.is_file():
        return TraceView([], missing="the ECG is no longer in the spool ([storage] retention_days)")
    try:
        dataset = read_dataset(path)
        ecg = waveform.decode(dataset)
        signal = waveform.to_model_input(ecg)
    except Exception as exc:  # a quarantined file may be anything: say so, draw nothing
        return TraceView([], missing=f"the waveform cannot be drawn ({type(exc).__name__})")
    if not np.isfinite(signal).all():
        return TraceView(header_fields(dataset), missing="the waveform holds non-numbers")
    svg = Markup(trace_svg(signal, ecg.leads_derived))  # numbers and lead names only
    return TraceView(header_fields(dataset), svg, bool(ecg.leads_derived))


def _bars(counts: list[int]) -> list[tuple[int, int]]:
    """(x, height) of each bar of a small chart 96 x 30 units high."""
    top = max(counts, default=0) or 1
    return [(4 * n, round(30 * count / top)) for n, count in enumerate(counts)]


def _histogram(values: list[float], low: float, high: float, bins: int) -> list[int]:
    counts, _ = np.histogram(np.clip(values, low, high), bins=bins, range=(low, high))
    return [int(c) for c in counts]


def _viewer(request: Request) -> User:
    return auth.current_user(request, request.app.state.console.sessions)


def _admin(request: Request) -> User:
    user = _viewer(request)
    auth.require_admin(user)
    return user


Viewer = Annotated[User, Depends(_viewer)]
Admin = Annotated[User, Depends(_admin)]
CSRF = [Depends(auth.check_csrf)]


def console_router(context: Console) -> APIRouter:
    """Every console route, bound to ``context``."""
    router = APIRouter()
    sessions = context.sessions

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> Response:
        return context.render(request, "login.html", None, next=auth.local_path(next), error="")

    @router.post("/login", dependencies=CSRF)
    def login(
        request: Request,
        username: Annotated[str, Form(max_length=200)],
        password: Annotated[str, Form(max_length=1000)],
        next: Annotated[str, Form(max_length=2000)] = "/",
    ) -> Response:
        with sessions.begin() as session:
            user = authenticate(session, username, password, context.policy, via="form")
            refused = user.reason if isinstance(user, LoginRefused) else None
            if not isinstance(user, LoginRefused):
                auth.log_in(request, user)
        if refused:
            response = context.render(
                request, "login.html", None, next=auth.local_path(next), error=refused
            )
            response.status_code = 401
            return response
        return RedirectResponse(auth.local_path(next), status_code=303)

    @router.post("/logout", dependencies=CSRF)
    def logout(request: Request, user: Viewer) -> Response:
        context.record(user.name, "logout")
        auth.log_out(request)
        return RedirectResponse("/login", status_code=303)

    @router.get("/", response_class=HTMLResponse)
    def overview(request: Request, user: Viewer) -> Response:
        spool = context.settings.storage.spool_dir
        with sessions() as session:
            counts = console.status_counts(session)
            activity = console.activity(session)
            oldest = console.oldest_unprocessed(session)
            failures = console.delivery_failures(session)
        disk = shutil.disk_usage(spool) if spool.is_dir() else None
        return context.render(
            request,
            "overview.html",
            user,
            counts=counts,
            activity=activity,
            charts={
                which: _bars(getattr(activity, which))
                for which in ("received", "predicted", "delivered")
            },
            oldest=oldest,
            failures=failures,
            reachability=context.reachability(),
            destinations=context.settings.destinations,
            card=context.card(),
            workers=context.state.snapshot(),
            workers_expected=context.state.workers_expected,
            disk_free_gb=disk.free / 1e9 if disk else None,
        )

    @router.get("/worklist", response_class=HTMLResponse)
    def worklist(
        request: Request,
        user: Viewer,
        status: str = "",
        received_from: str = "",
        received_to: str = "",
        calling_ae: str = "",
        destination: str = "",
        q: str = "",
        before: int | None = None,
    ) -> Response:
        filters = console.WorklistFilter(
            status=status if status in console.STATUSES else None,
            received_from=_day(received_from),
            received_to=_day(received_to),
            calling_ae_title=calling_ae[:16] or None,
            destination=destination[:64] or None,
            search=q.strip()[:64] or None,
        )
        with sessions() as session:
            rows, next_before = console.worklist(session, filters, before)
            callers = console.calling_ae_titles(session)
        query = {
            "status": status,
            "received_from": received_from,
            "received_to": received_to,
            "calling_ae": calling_ae,
            "destination": destination,
            "q": q,
        }
        return context.render(
            request,
            "worklist.html",
            user,
            rows=rows,
            next_before=next_before,
            query={key: value for key, value in query.items() if value},
            filters=filters,
            statuses=console.STATUSES,
            callers=callers,
            destinations=[d.name for d in context.settings.destinations],
        )

    def _instance_or_404(request: Request, uid: str) -> Any:
        if not is_valid_uid(uid):
            return None
        with sessions() as session:
            return console.instance_detail(session, uid)

    def _backfilled_from(uid: str) -> str | None:
        with sessions() as session:
            return queries.backfilled_from(session, [uid]).get(uid)

    @router.get("/ecg/{uid}", response_class=HTMLResponse)
    def detail(request: Request, uid: str, user: Viewer) -> Response:
        instance = _instance_or_404(request, uid)
        if instance is None:
            return context.error_page(request, 404, "no such ECG")
        context.record(user.name, "view_ecg", f"sop={uid}")
        view = _trace(instance.spool_path)
        prediction = queries.latest_prediction(instance)
        reports = prediction.reports if prediction else []
        return context.render(
            request,
            "ecg.html",
            user,
            instance=instance,
            prediction=prediction,
            reports=reports,
            status=queries.overall_status(instance, reports),
            view=view,
            backfilled_from=_backfilled_from(uid),
        )

    @router.get("/ecg/{uid}/report/{kind}")
    def download(request: Request, uid: str, kind: str, user: Viewer) -> Response:
        report = None
        if is_valid_uid(uid) and kind in KINDS:
            with sessions() as session:
                report = console.report_of(session, uid, kind)
        if report is None or not Path(report.path).is_file():
            return context.error_page(request, 404, "no such report (or no longer in the spool)")
        context.record(user.name, "download", f"sop={uid} kind={kind}")
        return FileResponse(
            report.path,
            media_type="application/dicom",
            filename=f"{kind}-{report.sop_instance_uid}.dcm",
        )

    @router.post("/ecg/{uid}/resend", dependencies=CSRF)
    def resend(request: Request, uid: str, user: Admin) -> Response:
        if not is_valid_uid(uid):
            return context.error_page(request, 404, "no such ECG")
        with sessions.begin() as session:
            count = sum(
                queries.resend(session, status, uid) for status in ("delivery_failed", "delivered")
            )
            audit.record(session, user.name, "resend", f"sop={uid} deliveries={count}")
        return RedirectResponse(f"/ecg/{uid}?resent={count}", status_code=303)

    @router.get("/model", response_class=HTMLResponse)
    def model(request: Request, user: Viewer) -> Response:
        card = context.card()
        plots = (
            [name for name in PLOTS if (card.path.parent / name).is_file()]
            if isinstance(card, ModelCard)
            else []
        )
        return context.render(request, "model.html", user, card=card, plots=plots)

    @router.get("/model/plots/{name}")
    def plot(request: Request, name: str, user: Viewer) -> Response:
        card = context.card()
        if name not in PLOTS or not isinstance(card, ModelCard):
            return context.error_page(request, 404, "no such plot")
        path = card.path.parent / name
        if not path.is_file():
            return context.error_page(request, 404, "no such plot")
        return FileResponse(path, media_type="image/png")

    @router.get("/cohort", response_class=HTMLResponse)
    def cohort(request: Request, user: Viewer) -> Response:
        with sessions() as session:
            rows = list(console.cohort(session))
        scored = [row for row in rows if row.chronological_age_years is not None]
        corrected = any(row.age_gap_corrected_years is not None for row in scored)
        by_sex: dict[str, list[float]] = {}
        for row in scored:
            gap = row.age_gap_corrected_years if corrected else row.age_gap_years
            if gap is not None:
                by_sex.setdefault(row.patient_sex or "unknown", []).append(gap)
        scatter, _, _ = np.histogram2d(
            np.array([row.chronological_age_years for row in scored], dtype=float),
            np.array([row.predicted_age_years for row in scored], dtype=float),
            bins=50,
            range=((0, 100), (0, 100)),
        )
        top = scatter.max() or 1.0
        return context.render(
            request,
            "cohort.html",
            user,
            total=len(rows),
            with_age=len(scored),
            corrected=corrected,
            cells=[
                (2 * i, 98 - 2 * j, round(0.15 + 0.85 * scatter[i, j] / top, 2))
                for i, j in zip(*np.nonzero(scatter), strict=True)
            ],
            gaps={
                sex: {
                    "n": len(values),
                    "median": float(np.median(values)),
                    "bars": _bars(_histogram(values, -30, 30, 24)),
                }
                for sex, values in sorted(by_sex.items())
            },
        )

    @router.get("/cohort.csv")
    def cohort_csv(user: Viewer) -> Response:
        context.record(user.name, "download", "cohort.csv")

        def lines() -> Iterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(console.CohortRow.csv_header())
            with sessions() as session:
                for row in console.cohort(session):
                    writer.writerow(row.csv_values())
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            yield buffer.getvalue()

        return StreamingResponse(
            lines(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="cohort.csv"'},
        )

    @router.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request, user: Admin, since: str = "") -> Response:
        day = _day(since)
        start = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc) if day else None
        with sessions() as session:
            events: list[AuditEvent] = audit.events(session, start, newest=AUDIT_PAGE_ROWS)
        return context.render(
            request,
            "audit.html",
            user,
            events=events,
            since=since if day else "",
        )

    return router
