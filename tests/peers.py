"""Real peers and bounded waits, for the end-to-end tests and the benchmarks: processes
killed by PID at the end, DCMTK tools with Nagle off, free ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "ecg2age-dicom"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK leaves Nagle on otherwise
DEFAULT_CARD = ROOT / "model_zoo" / "ECG2Age-PTBXL" / "model.toml"


def children_of(pid: int) -> list[int]:
    """The child processes that ``pid``'s main thread started (where multiprocessing starts
    its workers and its resource tracker)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def spawned_workers(pids: list[int]) -> list[int]:
    """Those of ``pids`` that multiprocessing spawned to run work (not its resource tracker)."""
    return [pid for pid in pids if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's reaper may be slow or absent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


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


def orthanc_config(
    folder: Path,
    ae_title: str,
    dicom_port: int,
    http_port: int,
    modalities: dict[str, tuple[str, str, int]] | None = None,
) -> Path:
    """An Orthanc configuration in ``folder`` (storage and index there too): local REST API
    without login, no plugins, any called AE title accepted; ``modalities`` are the DICOM
    nodes it knows (name: AE title, host, port), which may query it and be sent to."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "orthanc.json"
    settings = {
        "Name": ae_title,
        "StorageDirectory": str(folder / "orthanc-storage"),
        "IndexDirectory": str(folder / "orthanc-index"),
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomModalities": {name: list(node) for name, node in (modalities or {}).items()},
        "Plugins": [],
    }
    config.write_text(json.dumps(settings))
    return config


@dataclass
class Orthanc:
    """Debian's Orthanc as a real PACS, and its REST API."""

    http_port: int
    dicom_port: int

    @classmethod
    def start(
        cls,
        processes: Processes,
        folder: Path,
        ae_title: str = "ORTHANC",
        modalities: dict[str, tuple[str, str, int]] | None = None,
        dicom_port: int | None = None,
    ) -> Orthanc:
        orthanc = cls(free_port(), dicom_port or free_port())
        config = orthanc_config(folder, ae_title, orthanc.dicom_port, orthanc.http_port, modalities)
        processes.start([orthanc_binary(), str(config)], folder / "orthanc.log", env=DCMTK_ENV)
        wait_for(
            lambda: port_open(orthanc.dicom_port) and port_open(orthanc.http_port),
            60,
            "Orthanc to listen",
        )
        return orthanc

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=30) as answer:
            return json.load(answer)

    def upload(self, path: Path) -> str:
        """Store a DICOM file through the REST API; returns Orthanc's instance id."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/instances", data=path.read_bytes(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)["ID"]

    def tags(self) -> list[dict[str, str]]:
        """Every instance's main tags (simplified)."""
        return [self.get(f"/instances/{i}/simplified-tags") for i in self.get("/instances")]


def orthanc_binary() -> str:
    """Orthanc's path; the test fails in CI without it, and is skipped elsewhere."""
    import pytest

    binary = shutil.which("Orthanc")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Orthanc is required in CI (make install installs Debian's orthanc)")
        pytest.skip("Orthanc not installed (make install installs Debian's orthanc)")
    return binary
