"""Real peers for the end-to-end suite: ``ecg2age-dicom serve`` as a subprocess, DCMTK tools.

Every wait is bounded; every process started here is killed by PID at teardown.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ecg2age_dicom.store import make_engine, session_factory
from tests.peers import (
    CLI,
    DEFAULT_CARD,
    Processes,
    children_of,
    free_port,
    spawned_workers,
    wait_for,
)

if not all(shutil.which(tool) for tool in ("storescu", "storescp", "echoscu")):
    pytest.skip("DCMTK not installed (make install installs it)", allow_module_level=True)


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
    web_port: int = field(default_factory=free_port)

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
        return children_of(self.process.pid)

    def workers(self) -> list[int]:
        return spawned_workers(self.children())

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
[web]
port = {service.web_port}
metrics_public = true
secret_key_file = "{folder / "web-secret.key"}"
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
