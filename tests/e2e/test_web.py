"""The service's HTTP side, running: /healthz and /readyz as an orchestrator sees them, and
start-up when a port is taken."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.error
import urllib.request

import pytest

from tests.peers import CLI, wait_for


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as refused:
        return refused.code, json.load(refused)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_health_and_readiness_follow_the_service(make_service):
    service = make_service()
    service.start()
    assert get(service.web_port, "/healthz") == (200, {"status": "alive"})
    code, body = get(service.web_port, "/readyz")
    assert code == 200 and body["status"] == "ready"
    assert body["checks"] == {"listener": True, "database": True, "spool": True, "workers": True}
    assert body["model"] == "ECG2Age-PTBXL 1.0.0" and body["workers"] == {"ready": 1, "expected": 1}
    # A worker that dies: not ready until it is started again.
    (worker,) = service.workers()
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: get(service.web_port, "/readyz")[0] == 503, 30, "readyz to say not ready")
    assert get(service.web_port, "/readyz")[1]["checks"]["workers"] is False
    wait_for(lambda: get(service.web_port, "/readyz")[0] == 200, 180, "the worker again")
    assert service.stop() == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("section", ["web", "listener"])
def test_a_port_in_use_stops_start_up_with_a_clear_message(make_service, section):
    service = make_service()
    port = service.web_port if section == "web" else service.port
    with socket.create_server(("127.0.0.1", port)):
        process = service.processes.start(
            [str(CLI), "--config", str(service.folder / "ecg2age.toml"), "serve"], service.log
        )
        assert process.wait(timeout=120) == 2  # a configuration error
    log = service.log.read_text()
    assert f"[{section}] cannot listen on 127.0.0.1:{port}: Address already in use" in log
    assert "Traceback" not in log
