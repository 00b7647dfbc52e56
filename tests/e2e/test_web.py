"""The service's HTTP side, running: /healthz and /readyz as an orchestrator sees them, and
start-up when a port is taken."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sys
import urllib.error
import urllib.request

import pydicom.config
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from ecg2age_dicom.cli import main
from ecg2age_dicom.store import audit
from tests.e2e.test_hostile import send
from tests.ecg_factory import make_ecg
from tests.peers import CLI, start_storescp, storescu, wait_for


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
    # The service's start and stop are in the audit trail, with a digest of its configuration.
    with service.session() as session:
        events = audit.events(session)
    assert [(e.actor, e.action) for e in events] == [("service", "start"), ("service", "stop")]
    assert events[0].detail == events[1].detail and "config_sha256=" in events[0].detail


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


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` as {sample line without the value: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        lines = answer.read().decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line and not line.startswith("#")
    }


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_metrics_count_what_results_shows(make_service, processes, tmp_path):
    pacs = tmp_path / "pacs"
    pacs.mkdir()
    service = make_service()
    start_storescp(processes, service.pacs_port, pacs)
    service.start()
    files = [make_ecg().write(tmp_path / f"{i}.dcm") for i in range(3)]
    assert storescu(service.port, files).returncode == 0
    hostile = make_ecg().dataset
    hostile.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with pydicom.config.disable_value_validation():
        hostile.SOPInstanceUID = "1.2.abc.4"
    assert send(service.port, hostile) == 0xA900
    wait_for(lambda: len(list(pacs.iterdir())) == 6, 120, "the SRs and PDFs")
    wait_for(
        lambda: (
            scrape(service.web_port).get(
                'ecg2age_deliveries_total{destination="PACS",outcome="delivered"}'
            )
            == 6
        ),
        30,
        "the deliveries to be counted",
    )
    counts = scrape(service.web_port)
    assert counts['ecg2age_received_total{outcome="stored"}'] == 3
    assert counts['ecg2age_received_total{outcome="mismatch"}'] == 1
    assert counts['ecg2age_predictions_total{model="ECG2Age-PTBXL",version="1.0.0"}'] == 3
    assert counts['ecg2age_queue_depth{status="predicted"}'] == 3
    assert counts['ecg2age_model_info{name="ECG2Age-PTBXL",version="1.0.0"}'] == 1
    for stage in ("decode", "predict", "report", "delivery"):
        assert counts[f'ecg2age_stage_seconds_count{{stage="{stage}"}}'] >= 1
    assert not any("1.2." in key for key in counts)  # no UID in a label
    assert service.stop() == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_web_port_open_to_other_hosts_needs_a_user_first(make_service, monkeypatch):
    service = make_service()
    config = service.folder / "ecg2age.toml"
    config.write_text(config.read_text().replace("[web]\n", '[web]\nhost = "0.0.0.0"\n'))
    process = service.processes.start([str(CLI), "--config", str(config), "serve"], service.log)
    assert process.wait(timeout=120) == 2
    assert "[web] host 0.0.0.0 is reachable from other hosts and no user exists" in (
        service.log.read_text()
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough password\n"))
    add = ["--config", str(config), "user", "add", "admin", "--role", "admin", "--password-stdin"]
    assert main(add, out=io.StringIO()) == 0
    service.start()
    assert get(service.web_port, "/healthz") == (200, {"status": "alive"})
    assert service.stop() == 0
