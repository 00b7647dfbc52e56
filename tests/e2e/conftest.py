"""Real peers for the end-to-end suite: ``ecg2age-dicom serve`` as a subprocess, DCMTK tools.

Every wait is bounded; every process started here is killed by PID at teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ecg2age_dicom.store import make_engine, session_factory

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "ecg2age-dicom"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK leaves Nagle on otherwise
DEFAULT_CARD = ROOT / "model_zoo" / "ECG2Age-PTBXL" / "model.toml"

if not all(shutil.which(tool) for tool in ("storescu", "storescp", "echoscu")):
    pytest.skip("DCMTK not installed (make install installs it)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Processes:
    """Every process a test starts, killed at teardown."""

    running: list[subprocess.Popen] = field(default_factory=list)

    def start(self, args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        with open(log, "ab") as handle:
            process = subprocess.Popen(
                args, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        self.running.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)


@pytest.fixture
def processes() -> Iterator[Processes]:
    started = Processes()
    yield started
    started.kill_all()


@dataclass
class Service:
    """One ``serve`` configuration: start, stop, kill, and read its database."""

    processes: Processes
    folder: Path
    port: int
    pacs_port: int
    database_url: str
    process: subprocess.Popen | None = None
    engine: Engine | None = None

    @property
    def log(self) -> Path:
        return self.folder / "serve.log"

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.process = self.processes.start(
            [str(CLI), "--config", str(self.folder / "ecg2age.toml"), "serve"], self.log
        )
        wait_for(
            lambda: (
                b"listening on" in self.log.read_bytes()[offset:] or self.process.poll() is not None
            ),
            180,
            "serve to listen",
        )
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def children(self) -> list[int]:
        """The service's child processes: its workers (and multiprocessing's tracker)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def workers(self) -> list[int]:
        return [
            pid
            for pid in self.children()
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]

    def kill9(self) -> list[int]:
        """kill -9 the service process alone; returns its child processes' pids."""
        assert self.process is not None
        pids = self.children()
        self.process.kill()
        self.process.wait(timeout=30)
        return pids

    def session(self) -> Session:
        """A short-lived session: a long one would hold SQLite's write lock."""
        if self.engine is None:
            self.engine = make_engine(self.database_url)
        return session_factory(self.engine)()


@pytest.fixture
def make_service(processes, tmp_path, database_url) -> Iterator[Callable[..., Service]]:
    made: list[Service] = []

    def make(
        allowed: tuple[str, ...] = (),
        tls: str = "",
        extra: str = "",
        name: str = "service",
        pacs_port: int | None = None,
    ) -> Service:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        service = Service(processes, folder, free_port(), pacs_port or free_port(), database_url)
        made.append(service)
        allowed_list = ", ".join(f'"{a}"' for a in allowed)
        (folder / "ecg2age.toml").write_text(f"""
[listener]
ae_title = "ECG2AGE"
port = {service.port}
allowed_calling_ae_titles = [{allowed_list}]
{tls}
[storage]
database_url = "{database_url}"
spool_dir = "{folder / "spool"}"
[model]
card = "{DEFAULT_CARD}"
batch_size = 16
max_batch_wait_ms = 20
[pipeline]
claim_timeout_s = 2
poll_interval_s = 0.2
[sr]
send_to = ["PACS"]
[[destinations]]
name = "PACS"
ae_title = "PACS"
host = "127.0.0.1"
port = {service.pacs_port}
[delivery]
max_attempts = 30
initial_backoff_s = 0.5
max_backoff_s = 2
interval_s = 0.5
{extra}
""")
        return service

    yield make
    processes.kill_all()  # before the database goes away
    for service in made:
        if service.engine is not None:
            service.engine.dispose()


def start_storescp(processes: Processes, port: int, folder: Path) -> subprocess.Popen:
    """DCMTK's storescp as the PACS: every received SR lands in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    process = processes.start(
        ["storescp", "-aet", "PACS", "-od", str(folder), str(port)],
        folder.parent / "storescp.log",
        env=DCMTK_ENV,
    )
    wait_for(lambda: port_open(port), 30, "storescp to listen")
    return process


def storescu(
    port: int, files: list[Path], calling: str = "CART1", extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "storescu",
            "-R",
            "-aet",
            calling,
            "-aec",
            "ECG2AGE",
            *extra,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=DCMTK_ENV,
        check=False,
    )


def echoscu(port: int, calling: str = "CART1") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["echoscu", "-aet", calling, "-aec", "ECG2AGE", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=DCMTK_ENV,
        check=False,
    )
