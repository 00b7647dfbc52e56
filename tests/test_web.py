"""/healthz and /readyz: each readiness check fails on its own fault, and says which; /metrics
behind a login."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ecg2age_dicom import metrics
from ecg2age_dicom.config import Settings, StorageSettings, WebSettings
from ecg2age_dicom.spool import Spool
from ecg2age_dicom.store import make_engine, session_factory
from ecg2age_dicom.users import add_user
from ecg2age_dicom.web import ServiceState, create_app


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
