"""The console's pages through FastAPI's TestClient, on SQLite and PostgreSQL: nothing without a
login, CSRF on every POST, lockout, roles, what is audited, the worklist's filters and pages,
and a hostile Patient's Name shown as text. (The same in a real browser: tests/e2e.)"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import TwelveLeadECGWaveformStorage, generate_uid
from sqlalchemy import select, update

from ecg2age_dicom.config import Settings
from ecg2age_dicom.receive import Receiver
from ecg2age_dicom.spool import Spool
from ecg2age_dicom.store import audit, backfill, queries
from ecg2age_dicom.store import console as console_store
from ecg2age_dicom.store.models import (
    BackfillItem,
    BackfillState,
    Delivery,
    DeliveryStatus,
    Prediction,
    ReceivedInstance,
    Report,
    User,
)
from ecg2age_dicom.store.queries import utcnow
from ecg2age_dicom.users import add_user, remove_user
from ecg2age_dicom.web import ServiceState, create_app
from tests.ecg_factory import make_ecg
from tests.receive_factory import receive

ADMIN, VIEWER = ("alice", "alice password 1"), ("victor", "victor password 1")
PAGES = ["/", "/worklist", "/model", "/cohort", "/cohort.csv", "/audit", "/ecg/1.2.3"]
HOSTILE_NAME = "<img src=x onerror=alert(1)>^Mallory"


@pytest.fixture
def console(store, tmp_path):
    """(client, sessions, spool, settings) of a console over a database with two users."""
    _, sessions = store
    settings = Settings(
        storage={"spool_dir": tmp_path / "spool"},
        web={"secret_key_file": tmp_path / "secret.key", "max_failed_logins": 3},
        destinations=[{"name": "PACS", "ae_title": "PACS", "host": "127.0.0.1", "port": 1}],
    )
    spool = Spool(settings.storage.spool_dir)
    spool.incoming.mkdir(parents=True)
    with sessions.begin() as session:
        add_user(session, ADMIN[0], "admin", ADMIN[1], actor="cli")
        add_user(session, VIEWER[0], "viewer", VIEWER[1], actor="cli")
    state = ServiceState(1, ("Tiny", "0.1"))
    client = TestClient(create_app(settings, state, sessions), follow_redirects=False)
    return client, sessions, spool, settings


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "the page has no CSRF field"
    return match.group(1)


def log_in(client: TestClient, user: tuple[str, str], next_path: str = "/") -> object:
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login",
        data={"username": user[0], "password": user[1], "csrf": token, "next": next_path},
    )


def stored_ecg(
    sessions,
    spool,
    tmp_path,
    name="Test^Factory",
    patient_id="P-1",
    calling="CART7",
    destinations=("PACS",),
):
    """An ECG received as the listener does, then predicted with an SR pending to PACS."""
    made = make_ecg()
    ecg = made.dataset
    ecg.PatientName, ecg.PatientID, ecg.AccessionNumber = name, patient_id, "ACC-" + patient_id
    ecg.PatientSex = "F"
    path = made.write(tmp_path / f"{ecg.SOPInstanceUID}.dcm")
    receive(Receiver(sessions, spool, 50_000_000), path, calling=calling)
    with sessions.begin() as session:
        (row,) = queries.claim_received(session, "w", 1)
        report = tmp_path / f"sr-{ecg.SOPInstanceUID}.dcm"
        report.write_bytes(b"not really an SR")
        queries.save_results(
            session,
            [
                queries.NewResult(
                    row.id,
                    "Tiny",
                    "0.1",
                    61.5,
                    51.0,
                    10.5,
                    ("baseline_wander",),
                    [queries.NewReport("sr", generate_uid(), str(report))],
                    list(destinations),
                )
            ],
        )
    return ecg.SOPInstanceUID


def test_no_page_without_a_login_and_no_phi_on_the_way(console):
    client, *_ = console
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next=")
    login = client.get("/login")
    assert login.status_code == 200 and "Test^Factory" not in login.text
    assert "script-src" not in login.headers["content-security-policy"]  # none allowed
    assert "default-src 'none'" in login.headers["content-security-policy"]
    assert login.headers["x-frame-options"] == "DENY"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_login_and_logout_are_audited_and_need_the_csrf_token(console):
    client, sessions, *_ = console
    client.get("/login")
    no_token = client.post("/login", data={"username": ADMIN[0], "password": ADMIN[1]})
    assert no_token.status_code == 403
    wrong_token = client.post(
        "/login", data={"username": ADMIN[0], "password": ADMIN[1], "csrf": "forged"}
    )
    assert wrong_token.status_code == 403
    answer = log_in(client, ADMIN, next_path="/worklist")
    assert answer.status_code == 303 and answer.headers["location"] == "/worklist"
    page = client.get("/")
    assert page.status_code == 200 and "alice (admin)" in page.text
    assert client.post("/logout").status_code == 403  # no token: still logged in
    assert client.post("/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
    assert client.get("/").status_code == 303
    with sessions() as session:
        actions = [(e.actor, e.action) for e in audit.events(session)][2:]
    assert actions == [("alice", "login"), ("alice", "logout")]


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_after_the_login_only_a_local_path(console, target):
    client, *_ = console
    answer = log_in(client, ADMIN, next_path=target)
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_failed_logins_lock_the_user_out_and_are_audited(console):
    client, sessions, *_ = console
    for _ in range(3):  # max_failed_logins = 3
        assert log_in(client, (ADMIN[0], "not the password")).status_code == 401
    refused = log_in(client, ADMIN)  # the right password, but locked out
    assert refused.status_code == 401 and "locked until" in refused.text
    assert log_in(client, ("nobody", "whatever password")).status_code == 401
    with sessions.begin() as session:
        user = session.scalar(select(User).where(User.name == ADMIN[0]))
        assert user.failed_logins == 3 and user.locked_until is not None
        user.locked_until -= timedelta(minutes=10)  # the lockout is over
    assert log_in(client, ADMIN).status_code == 303
    with sessions() as session:
        actions = [e.action for e in audit.events(session) if e.action.startswith("login")]
        events = audit.events(session)
    assert actions == ["login_failed"] * 3 + ["login_refused", "login_failed", "login"]
    assert "locked_for=300s" in events[4].detail  # 5 minutes, the default lockout
    assert not any("not the password" in e.detail for e in events)


def test_a_removed_user_is_logged_out_at_once(console):
    client, sessions, *_ = console
    log_in(client, VIEWER)
    assert client.get("/").status_code == 200
    with sessions.begin() as session:
        remove_user(session, VIEWER[0], actor="cli")
    assert client.get("/").status_code == 303


def test_the_detail_page_draws_the_trace_and_shows_a_hostile_name_as_text(console, tmp_path):
    client, sessions, spool, _ = console
    uid = stored_ecg(sessions, spool, tmp_path, name=HOSTILE_NAME)
    log_in(client, VIEWER)
    page = client.get(f"/ecg/{uid}")
    assert page.status_code == 200
    # "=" separates a PN's groups: the alphabetic one is "<img src", shown as text.
    assert "<img src" not in page.text and "<dd>&lt;img src</dd>" in page.text
    assert page.text.count('<polyline class="lead"') == 13  # 12 segments and the rhythm strip
    assert "61.5" in page.text and "baseline_wander" in page.text
    assert 'id="resend"' not in page.text  # a viewer
    with sessions() as session:
        (viewed,) = [e for e in audit.events(session) if e.action == "view_ecg"]
    assert (viewed.actor, viewed.detail) == (VIEWER[0], f"sop={uid}")


def test_the_detail_page_says_which_backfill_retrieved_the_ecg(console, tmp_path):
    client, sessions, spool, _ = console
    uid = stored_ecg(sessions, spool, tmp_path)
    log_in(client, VIEWER)
    assert "retrieved by the backfill" not in client.get(f"/ecg/{uid}").text
    with sessions.begin() as session:
        found = backfill.Found(uid, "1.2.3", "1.2.4", TwelveLeadECGWaveformStorage, "20240102")
        backfill.record_study(session, "ARCHIVE", "1.2.3", "20240102", [found])
    with sessions.begin() as session:
        (item,) = session.scalars(select(BackfillItem)).all()
        backfill.finish_retrieval(session, item.id, BackfillState.RETRIEVED)
    assert "retrieved by the backfill of ARCHIVE" in client.get(f"/ecg/{uid}").text


def test_only_an_admin_may_resend_and_it_is_audited(console, tmp_path):
    client, sessions, spool, _ = console
    uid = stored_ecg(sessions, spool, tmp_path)
    with sessions.begin() as session:
        session.execute(update(Delivery).values(status=DeliveryStatus.DELIVERY_FAILED, attempts=9))
    log_in(client, VIEWER)
    token = csrf_of(client.get(f"/ecg/{uid}").text)
    assert client.post(f"/ecg/{uid}/resend", data={"csrf": token}).status_code == 403
    client.post("/logout", data={"csrf": token})
    log_in(client, ADMIN)
    page = client.get(f"/ecg/{uid}").text
    assert 'id="resend"' in page
    assert client.post(f"/ecg/{uid}/resend").status_code == 403  # no CSRF token
    answer = client.post(f"/ecg/{uid}/resend", data={"csrf": csrf_of(page)})
    assert answer.status_code == 303
    with sessions() as session:
        (delivery,) = session.scalars(select(Delivery))
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 0)
        (resent,) = [e for e in audit.events(session) if e.action == "resend"]
    assert resent.detail == f"sop={uid} deliveries=1"


def test_downloads_are_audited_and_unknown_values_are_404(console, tmp_path):
    client, sessions, spool, _ = console
    uid = stored_ecg(sessions, spool, tmp_path)
    log_in(client, VIEWER)
    answer = client.get(f"/ecg/{uid}/report/sr")
    assert answer.status_code == 200 and answer.content == b"not really an SR"
    for path in (f"/ecg/{uid}/report/../../etc", f"/ecg/{uid}/report/pdf", "/ecg/1.2.abc"):
        assert client.get(path).status_code == 404, path
    csv_text = client.get("/cohort.csv").text
    assert uid in csv_text and "P-1" not in csv_text  # UIDs and ages, no patient IDs
    with sessions() as session:
        downloads = [e.detail for e in audit.events(session) if e.action == "download"]
    assert downloads == [f"sop={uid} kind=sr", "cohort.csv"]


def test_the_worklist_filters_searches_and_pages(console, tmp_path, monkeypatch):
    client, sessions, spool, _ = console
    first = stored_ecg(sessions, spool, tmp_path, patient_id="P-1", calling="CART1")
    second = stored_ecg(sessions, spool, tmp_path, patient_id="P-2", calling="CART2")
    log_in(client, VIEWER)
    page = client.get("/worklist").text
    assert page.index(second) < page.index(first)  # newest first
    assert first not in client.get("/worklist", params={"q": "P-2"}).text
    assert second in client.get("/worklist", params={"q": "ACC-P-2"}).text
    assert first not in client.get("/worklist", params={"calling_ae": "CART2"}).text
    assert "No ECG matches" in client.get("/worklist", params={"status": "delivered"}).text
    assert second in client.get("/worklist", params={"status": "predicted"}).text
    assert "No ECG matches" in client.get("/worklist", params={"received_to": "2001-01-01"}).text
    assert second in client.get("/worklist", params={"destination": "PACS"}).text
    hostile = client.get("/worklist", params={"q": "' OR 1=1 --", "received_from": "x"})
    assert hostile.status_code == 200 and "No ECG matches" in hostile.text
    from ecg2age_dicom.store import console as console_queries

    worklist = console_queries.worklist
    monkeypatch.setattr(
        console_queries, "worklist", lambda s, f, b=None, size=50: worklist(s, f, b, size=1)
    )
    newest = client.get("/worklist").text
    assert second in newest and first not in newest
    older = re.search(r'href="(/worklist\?[^"]*before=\d+)"', newest).group(1)
    assert first in client.get(older.replace("&amp;", "&")).text


def test_the_status_filters_agree_with_each_ecgs_status(console, tmp_path):
    client, sessions, spool, _ = console
    pending, delivered, failed = (stored_ecg(sessions, spool, tmp_path) for _ in range(3))
    undeliverable = stored_ecg(sessions, spool, tmp_path, destinations=())  # nowhere to go
    with sessions.begin() as session:
        due = {d.report_sop_instance_uid: d for d in queries.claim_due_deliveries(session, 10)}
        by_ecg = {
            instance.sop_instance_uid: due[report.sop_instance_uid].delivery_id
            for report, instance in session.execute(
                select(Report, ReceivedInstance)
                .join(Prediction, Report.prediction_id == Prediction.id)
                .join(ReceivedInstance, Prediction.instance_id == ReceivedInstance.id)
            )
            if report.sop_instance_uid in due
        }
        queries.finish_deliveries(
            session,
            [
                queries.Attempt(by_ecg[delivered], delivered=True),
                queries.Attempt(by_ecg[failed], delivered=False, error="refused"),
                queries.Attempt(by_ecg[pending], delivered=False, error="down", retry_at=utcnow()),
            ],
        )
    log_in(client, VIEWER)
    shown = {
        status: client.get("/worklist", params={"status": status}).text
        for status in ("predicted", "delivered", "delivery_failed")
    }
    assert pending in shown["predicted"] and undeliverable in shown["predicted"]
    assert delivered in shown["delivered"] and failed in shown["delivery_failed"]
    for uid, status in (
        (pending, "predicted"),
        (delivered, "delivered"),
        (failed, "delivery_failed"),
    ):
        assert [name for name, page in shown.items() if uid in page] == [status]
    with sessions() as session:
        counts = console_store.status_counts(session)
    assert (counts["predicted"], counts["delivered"], counts["delivery_failed"]) == (2, 1, 1)
    with sessions.begin() as session:
        assert queries.resend(session, "delivery_failed", failed) == 1
    assert failed in client.get("/worklist", params={"status": "predicted"}).text


def test_the_audit_page_is_for_admins_only(console):
    client, *_ = console
    log_in(client, VIEWER)
    assert client.get("/audit").status_code == 403
    assert "/audit" not in client.get("/").text
    client.cookies.clear()
    log_in(client, ADMIN)
    page = client.get("/audit")
    assert page.status_code == 200 and "user_add" in page.text and "login" in page.text


def test_overview_model_and_cohort_pages(console, tmp_path):
    client, sessions, spool, _ = console
    stored_ecg(sessions, spool, tmp_path)
    log_in(client, VIEWER)
    overview = client.get("/").text
    assert "ECG2Age-PTBXL" in overview and "Not for clinical use" in overview
    # Nobody listens at port 1: the C-ECHO fails (its reason, or no answer within 3 s).
    (echo,) = re.findall(r"<td>127.0.0.1:1</td>\s*<td>(.*?)</td>", overview)
    assert echo.startswith('<span class="bad">') and "reachable" not in echo
    model = client.get("/model")
    assert "pearson" in model.text.lower() and "/model/plots/calibration.png" in model.text
    assert client.get("/model/plots/calibration.png").headers["content-type"] == "image/png"
    assert client.get("/model/plots/model.keras").status_code == 404
    cohort = client.get("/cohort").text
    assert "1 predictions, 1 with a chronological age" in cohort
    # the age gap by sex: one woman, her gap +10.5 y
    assert '<td>F</td><td class="num">1</td><td class="num">+10.5</td>' in cohort
