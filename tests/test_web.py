"""/healthz and /readyz: each readiness check fails on its own fault, and says which."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from ecg2age_dicom.store import make_engine, session_factory
from ecg2age_dicom.web import ServiceState, create_app


def client(state, sessions, incoming) -> TestClient:
    return TestClient(create_app(state, sessions, incoming))


@pytest.fixture
def ready_state() -> ServiceState:
    state = ServiceState(workers_expected=1, model=("Tiny", "0.1"))
    state.update(listener_up=True, workers_ready=1)
    return state


def test_a_ready_service_says_so_without_phi(store, tmp_path, ready_state):
    _, sessions = store
    answer = client(ready_state, sessions, tmp_path).get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ready",
        "checks": {"listener": True, "database": True, "spool": True, "workers": True},
        "workers": {"ready": 1, "expected": 1},
        "model": "Tiny 0.1",
    }
    assert client(ready_state, sessions, tmp_path).get("/healthz").json() == {"status": "alive"}


def test_each_fault_makes_it_not_ready_and_is_named(store, tmp_path, ready_state):
    _, sessions = store
    ready_state.update(listener_up=False)
    assert (
        client(ready_state, sessions, tmp_path).get("/readyz").json()["checks"]["listener"] is False
    )
    ready_state.update(listener_up=True, workers_ready=0)
    answer = client(ready_state, sessions, tmp_path).get("/readyz")
    assert answer.status_code == 503 and answer.json()["checks"]["workers"] is False


@pytest.mark.parametrize("where", ["a missing folder", "a file"])
def test_a_spool_where_no_file_can_be_made_is_not_ready(store, tmp_path, ready_state, where):
    _, sessions = store
    incoming = tmp_path / "incoming"
    if where == "a file":
        incoming.write_text("not a folder")
    answer = client(ready_state, sessions, incoming).get("/readyz")
    assert answer.status_code == 503 and answer.json()["checks"]["spool"] is False


def test_a_database_that_does_not_answer_is_not_ready(tmp_path, ready_state):
    # Nothing listens on port 1: the connection is refused at once.
    sessions = session_factory(make_engine("postgresql://nobody@127.0.0.1:1/none"))
    answer = client(ready_state, sessions, tmp_path).get("/readyz")
    assert answer.status_code == 503
    checks = answer.json()["checks"]
    assert checks["database"] is False and checks["spool"] is True


def test_metrics_need_a_login_unless_public(store, tmp_path, ready_state):
    _, sessions = store
    answer = client(ready_state, sessions, tmp_path).get("/metrics")
    assert answer.status_code == 401 and "metrics_public" in answer.json()["detail"]
