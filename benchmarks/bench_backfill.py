"""Backfill from a real PACS: ECG/s of ``backfill`` from Orthanc, end to end, beside Orthanc's
own send rate.

Run: ``.venv/bin/python -m benchmarks.bench_backfill [--n 2000] [--runs 3] [--retrieve move get]``
(``make bench`` runs it).

Each run starts fresh: Debian's Orthanc holding N real ECGs (PTB-XL 500 Hz, folds 1-8, as
:mod:`benchmarks.bench_bulk` writes them), the service (``serve``, one worker, SQLite, SR + PDF
for each ECG, delivered back into Orthanc), then ``backfill --source ARCHIVE`` (C-MOVE or
C-GET, the default ``[backfill]`` but ``max_per_minute`` lifted) timed from start to exit: it
exits when every ECG is scored, or refused by the quality gate (a few real ones are).
Orthanc's own send rate is its REST ``/modalities/.../store`` of the same N instances to
DCMTK's storescp in one job. Orthanc runs with ``TCP_NODELAY=1`` (DCMTK leaves Nagle on
otherwise, and each C-FIND answer waits 40 ms). Figures: median (worst).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.bench_bulk import make_files
from benchmarks.bench_e2e import Service, median_worst
from tests.peers import (
    CLI,
    DCMTK_ENV,
    ROOT,
    Orthanc,
    Processes,
    free_port,
    start_storescp,
)

NIGHT_HOURS = 12  # windows = ["19:00-07:00"]


def orthanc_send_rate(orthanc: Orthanc, modality: str, count: int) -> float:
    """Orthanc sending every instance it holds to ``modality`` in one synchronous job."""
    body = json.dumps({"Resources": orthanc.get("/instances"), "Synchronous": True}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{orthanc.http_port}/modalities/{modality}/store",
        data=body,
        method="POST",
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=3600) as answer:
        answer.read()
    return count / (time.perf_counter() - start)


def one_run(work: Path, files: list[Path], retrieve: str) -> tuple[float, float]:
    """(backfill ECG/s end to end, Orthanc's send ECG/s) on a fresh Orthanc and service."""
    processes = Processes()
    try:
        orthanc_port, storescp_port = free_port(), free_port()
        listener_port = free_port()
        orthanc = Orthanc.start(
            processes,
            work / "orthanc",
            "ORTHANC",
            modalities={
                "ECG2AGE": ("ECG2AGE", "127.0.0.1", listener_port),
                "STORESCP": ("STORESCP", "127.0.0.1", storescp_port),
            },
            dicom_port=orthanc_port,
        )
        subprocess.run(
            ["storescu", "-aec", "ORTHANC", "127.0.0.1", str(orthanc_port), *map(str, files)],
            check=True,
            env=DCMTK_ENV,
            capture_output=True,
            timeout=1800,
        )
        start_storescp(processes, storescp_port, work / "storescp")
        send_rate = orthanc_send_rate(orthanc, "STORESCP", len(files))
        service = Service(
            processes,
            work,
            orthanc_port,
            pacs_ae_title="ORTHANC",
            extra=f"""
[[sources]]
name = "ARCHIVE"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {orthanc_port}
retrieve = "{retrieve}"
[backfill]
max_per_minute = 60000
""",
            listener_port=listener_port,
        )
        config = next(work.glob("serve-*.toml"))
        start = time.perf_counter()
        done = subprocess.run(
            [str(CLI), "--config", str(config), "backfill", "--source", "ARCHIVE"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=7200,
        )
        seconds = time.perf_counter() - start
        found = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("found")]
        if done.returncode != 0 or found != [str(len(files))]:  # 0: each scored or refused
            raise RuntimeError(f"backfill did not finish every ECG:\n{done.stdout}{done.stderr}")
        service.stop()
        return len(files) / seconds, send_rate
    finally:
        processes.kill_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--retrieve", nargs="+", choices=("move", "get"), default=["move", "get"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as work:
        files = make_files(Path(work) / "files", args.n)
        runs: dict[str, list[tuple[float, float]]] = {}
        for retrieve in args.retrieve:
            for number in range(args.runs):
                folder = Path(work) / f"{retrieve}{number}"
                folder.mkdir()
                runs.setdefault(retrieve, []).append(one_run(folder, files, retrieve))
    orthanc = [rate for results in runs.values() for _, rate in results]
    print(
        f"backfill of {args.n} real ECGs from Orthanc (SR + PDF back into Orthanc, 1 worker, "
        f"SQLite, [backfill] max_concurrent = 2); median (worst) of {args.runs} runs"
    )
    print(f"{'Orthanc sending them to storescp (ECG/s)':<52}{median_worst(orthanc)}")
    for retrieve, results in runs.items():
        rates = [rate for rate, _ in results]
        ratios = [rate / statistics.median(orthanc) for rate in rates]
        per_night = [rate * NIGHT_HOURS * 3600 for rate in rates]
        print(f"{f'backfill by C-{retrieve.upper()}, end to end (ECG/s)':<52}{median_worst(rates)}")
        print(f"{'  ratio to Orthanc send':<52}{statistics.median(ratios):.3f} ({min(ratios):.3f})")
        print(f"{'  ECGs per night (12 h window)':<52}{median_worst(per_night)}")


if __name__ == "__main__":
    main()
