"""/healthz and /readyz: each readiness check fails on its own fault, and says which; /metrics
behind a login."""

from __future__ import annotations

import shutil
import ssl
import urllib.error
import urllib.request

import pytest
from fastapi.testclient import TestClient

from ecg2age_dicom import metrics
from ecg2age_dicom.config import Settings, StorageSettings, WebSettings
from ecg2age_dicom.errors import ConfigError
from ecg2age_dicom.spool import Spool
from ecg2age_dicom.store import make_engine, session_factory
from ecg2age_dicom.users import add_user
from ecg2age_dicom.web import ServiceState, create_app, start_web
from tests.peers import free_port, wait_for
from tests.test_sockets import self_signed


def client(state, sessions, spool_dir, **web) -> TestClient:
    settings = Settings(
        storage=StorageSettings(spool_dir=spool_dir),
        web=WebSettings(secret_key_file=spool_dir.parent / "web-secret.key", **web),
    )
    return TestClient(create_app(settings, state, sessions))


def spool_at(path):
    """A spool folder whose incoming folder exists, as the service makes it."""
    Spool(path).incoming.mkdir(parents=True)
    return path


@pytest.fixture
def ready_state() -> ServiceState:
    state = ServiceState(workers_expected=1, model=("Tiny", "0.1"))
    state.update(listener_up=True, workers_ready=1)
    return state


def test_a_ready_service_says_so_without_phi(store, tmp_path, ready_state):
    _, sessions = store
    spool = spool_at(tmp_path / "spool")
    answer = client(ready_state, sessions, spool).get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ready",
        "checks": {"listener": True, "database": True, "spool": True, "workers": True},
        "workers": {"ready": 1, "expected": 1},
        "model": "Tiny 0.1",
    }
    assert client(ready_state, sessions, spool).get("/healthz").json() == {"status": "alive"}


def test_each_fault_makes_it_not_ready_and_is_named(store, tmp_path, ready_state):
    _, sessions = store
    spool = spool_at(tmp_path / "spool")
    ready_state.update(listener_up=False)
    assert client(ready_state, sessions, spool).get("/readyz").json()["checks"]["listener"] is False
    ready_state.update(listener_up=True, workers_ready=0)
    answer = client(ready_state, sessions, spool).get("/readyz")
    assert answer.status_code == 503 and answer.json()["checks"]["workers"] is False


@pytest.mark.parametrize("where", ["a missing folder", "a file"])
def test_a_spool_where_no_file_can_be_made_is_not_ready(store, tmp_path, ready_state, where):
    _, sessions = store
    spool = tmp_path / "spool"
    if where == "a file":
        Spool(spool).incoming.parent.mkdir(parents=True)
        Spool(spool).incoming.write_text("not a folder")
    answer = client(ready_state, sessions, spool).get("/readyz")
    assert answer.status_code == 503 and answer.json()["checks"]["spool"] is False


def test_a_database_that_does_not_answer_is_not_ready(tmp_path, ready_state):
    # Nothing listens on port 1: the connection is refused at once.
    sessions = session_factory(make_engine("postgresql://nobody@127.0.0.1:1/none"))
    answer = client(ready_state, sessions, spool_at(tmp_path / "spool")).get("/readyz")
    assert answer.status_code == 503
    checks = answer.json()["checks"]
    assert checks["database"] is False and checks["spool"] is True


def test_metrics_need_a_login_unless_public(store, tmp_path, ready_state, monkeypatch):
    _, sessions = store
    # Counting on in this process for this test only (the service enables it at start-up).
    monkeypatch.setattr(metrics, "_enabled", None)
    monkeypatch.setenv(metrics.ENV, str(tmp_path / "metrics"))
    metrics.enable(tmp_path / "metrics")
    with sessions.begin() as session:
        add_user(session, "prometheus", "viewer", "scraper password 1", actor="cli")
    web = client(ready_state, sessions, spool_at(tmp_path / "spool"))
    answer = web.get("/metrics")
    assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Basic")
    assert web.get("/metrics", auth=("prometheus", "wrong password!")).status_code == 401
    scraped = web.get("/metrics", auth=("prometheus", "scraper password 1"))
    assert scraped.status_code == 200 and "ecg2age_queue_depth" in scraped.text
    public = client(ready_state, sessions, tmp_path / "spool", metrics_public=True)
    assert public.get("/metrics").status_code == 200


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_the_console_over_https_with_secure_cookies(store, tmp_path, ready_state):
    _, sessions = store
    key, cert = self_signed(tmp_path)
    port = free_port()
    web = WebSettings(port=port, secret_key_file=tmp_path / "key", tls={"cert": cert, "key": key})
    settings = Settings(storage=StorageSettings(spool_dir=spool_at(tmp_path / "spool")), web=web)
    server = start_web(web, create_app(settings, ready_state, sessions), users=0)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        url = f"https://127.0.0.1:{port}"
        wait_for(lambda: _answers(url + "/healthz", context), 20, "HTTPS to answer")
        with urllib.request.urlopen(url + "/login", context=context, timeout=10) as answer:
            assert "secure" in answer.headers["set-cookie"].lower()
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP on HTTPS
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
    finally:
        server.stop()


def test_an_unusable_certificate_stops_start_up_with_its_reason(store, tmp_path, ready_state):
    _, sessions = store
    (tmp_path / "bad.pem").write_text("not a certificate")
    web = WebSettings(
        port=free_port(),
        secret_key_file=tmp_path / "key",
        tls={"cert": tmp_path / "bad.pem", "key": tmp_path / "bad.pem"},
    )
    settings = Settings(storage=StorageSettings(spool_dir=spool_at(tmp_path / "spool")), web=web)
    with pytest.raises(ConfigError, match=r"\[web.tls\] cannot be used"):
        start_web(web, create_app(settings, ready_state, sessions), users=0)


def _answers(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as answer:
            return answer.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False
