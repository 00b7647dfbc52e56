"""End-to-end benchmark: ecg2age-dicom against bare baselines, measured in one run.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_e2e.py [--n 500] [--backlog 10000]``.
Starts ``serve`` (SQLite, default model, default ``[pipeline] workers = 1``) with DCMTK
``storescp`` as the PACS and measures: accept rate over 1 and 4 associations, end-to-end
throughput (until the last SR is at the PACS), the CPU each process spent per ECG in that
burst, latency receipt -> SR arrival (paced at 1 ECG/s and inside a burst), memory, the same
burst with ``[pipeline] workers = 2``, and memory with a backlog of received-but-unprocessed
ECGs (a receive-only server, then a worker that drains it). The service is several
processes, so memory is the sum over them of each one's peak RSS (an upper bound: the
shared TensorFlow libraries count once per worker) and the peak of their summed PSS (shared
pages split between the processes: what the service really holds). Baselines in the same
run: the bare model's best batched rate on the same inputs, pynetdicom's storescp app,
DCMTK's storescp and Orthanc (when installed) receiving the same files. Every DCMTK-based
process runs with TCP_NODELAY=1. Prints one table and writes it to
``benchmarks/results/YYYY-MM-DD.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecg2age_dicom import waveform
from ecg2age_dicom.model import ModelRuntime
from ecg2age_dicom.store import make_engine, session_factory
from ecg2age_dicom.store.models import ReceivedInstance
from tests.e2e.conftest import CLI, DCMTK_ENV, Processes, free_port, port_open, wait_for
from tests.ecg_factory import make_ecg

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "model_zoo" / "ECG2Age-PTBXL" / "model.toml"


def make_files(folder: Path, count: int) -> list[Path]:
    """Fresh ECGs (new UIDs), alternating 500 Hz and 1000 Hz, 10 s, 12 leads."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        make_ecg(fs=500 if i % 2 else 1000).write(folder / f"{i:05d}.dcm") for i in range(count)
    ]


def send(port: int, files: list[Path], aec: str, associations: int = 1) -> float:
    """Seconds to C-STORE ``files`` with DCMTK storescu over ``associations`` in parallel."""
    chunks = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    runs = [
        subprocess.Popen(
            ["storescu", "-R", "-aec", aec, "127.0.0.1", str(port), *map(str, chunk)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for chunk in chunks
    ]
    for run in runs:
        run.wait(timeout=3600)
    return time.perf_counter() - start


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the service's worker processes)."""
    pids = [pid]
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:  # the process ended meanwhile
        return pids
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        for child in children:
            pids += process_tree(int(child))
    return pids


def _status_kb(path: Path, field: str) -> int:
    try:
        lines = path.read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):  # the process ended meanwhile
        return 0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """Sum over the process tree of ``field`` (VmHWM: each process's peak RSS, so the sum
    counts shared libraries such as TensorFlow's once per process: an upper bound)."""
    return sum(_status_kb(Path(f"/proc/{p}/status"), field) for p in process_tree(pid)) / 1024


def pss_mb(pid: int) -> float:
    """Proportional set size of the process tree: shared pages split between the processes
    that map them, so the sum is the memory the service really holds."""
    return sum(_status_kb(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in process_tree(pid)) / 1024


def cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each process of the tree."""
    used = {}
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        used[p] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


class PeakSampler:
    """Samples the tree's summed PSS every half second; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.5):
            if not Path(f"/proc/{self.pid}").exists():
                return
            self.peak = max(self.peak, pss_mb(self.pid))

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self.peak


def receive_rate(
    processes: Processes,
    name: str,
    command: list[str],
    port: int,
    aec: str,
    files: list[Path],
    log: Path,
) -> float:
    process = processes.start(command, log, env=DCMTK_ENV)
    wait_for(lambda: port_open(port), 60, f"{name} to listen")
    seconds = send(port, files, aec)
    process.terminate()
    process.wait(timeout=60)
    return len(files) / seconds


def orthanc_rate(processes: Processes, work: Path, files: list[Path]) -> float | None:
    binary = shutil.which("Orthanc")
    if binary is None:
        return None
    port, http = free_port(), free_port()
    config = work / "orthanc.json"
    config.write_text(
        json.dumps(
            {
                "Name": "bench",
                "StorageDirectory": str(work / "orthanc-storage"),
                "IndexDirectory": str(work / "orthanc-index"),
                "DicomAet": "ORTHANC",
                "DicomPort": port,
                "HttpPort": http,
                "RemoteAccessAllowed": False,
                "DicomCheckCalledAet": False,
                "Plugins": [],
            }
        )
    )
    return receive_rate(
        processes, "Orthanc", [binary, str(config)], port, "ORTHANC", files, work / "orthanc.log"
    )


def bare_model_rate(inputs: list[Path]) -> float:
    runtime = ModelRuntime.load(CARD)
    batch = np.stack(
        [runtime.card.input.model_input(waveform.decode(pydicom.dcmread(p))) for p in inputs[:64]]
    )
    best = 0.0
    for size in (32, 64):
        runtime.predict(batch[:size])
        start = time.perf_counter()
        for _ in range(4):
            runtime.predict(batch[:size])
        best = max(best, 4 * size / (time.perf_counter() - start))
    return best


class Service:
    """``serve`` with its PACS (storescp) in a work folder."""

    def __init__(
        self,
        processes: Processes,
        work: Path,
        pacs_port: int,
        workers: int = 1,
        database: Path | None = None,
    ) -> None:
        self.processes, self.work = processes, work
        self.port = free_port()
        self.database = database or work / "db.sqlite3"
        config = work / f"serve-{self.port}.toml"
        config.write_text(f"""
[listener]
port = {self.port}
max_associations = 16
[storage]
database_url = "sqlite:///{self.database}"
spool_dir = "{work / "spool"}"
[model]
card = "{CARD}"
[pipeline]
workers = {workers}
poll_interval_s = 0.1
[[destinations]]
name = "PACS"
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs_port}
[delivery]
interval_s = 0.2
""")
        log = work / f"serve-{self.port}.log"
        self.process = processes.start([str(CLI), "--config", str(config), "serve"], log)
        wait_for(lambda: b"listening on" in log.read_bytes(), 300, "serve to listen")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=300)

    def received_at(self) -> dict[str, float]:
        engine = make_engine(f"sqlite:///{self.database}")
        with session_factory(engine)() as session:
            rows = session.query(ReceivedInstance.sop_instance_uid, ReceivedInstance.received_at)
            times = {uid: at.replace(tzinfo=dt.timezone.utc).timestamp() for uid, at in rows}
        engine.dispose()
        return times


def sr_arrivals(pacs: Path) -> dict[str, float]:
    """ECG SOP Instance UID -> when its SR file appeared at the PACS."""
    arrivals = {}
    for path in pacs.glob("SR*"):
        evidence = pydicom.dcmread(path).CurrentRequestedProcedureEvidenceSequence[0]
        uid = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        arrivals[uid.ReferencedSOPInstanceUID] = path.stat().st_mtime
    return arrivals


def scu_stalls(work: Path) -> int:
    """Deliveries that waited out the DIMSE timeout in all serve logs of the run."""
    return sum(
        log.read_text(errors="replace").count("DIMSE timeout reached while waiting")
        for log in work.glob("serve-*.log")
    )


def ratio_pair(first: float, second: float, baseline: float | None) -> str:
    return f"{first / baseline:.2f} / {second / baseline:.2f}" if baseline else "n/a"


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return (statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))], ordered[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="ECGs per throughput run")
    parser.add_argument("--backlog", type=int, default=10000)
    parser.add_argument("--paced", type=int, default=20, help="ECGs sent at 1 per second")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / f"{dt.date.today()}.md"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ecg2age-bench-", dir=ROOT / "var"))
    processes = Processes()
    rows: list[tuple[str, str]] = []
    try:
        print(f"generating ECGs in {work} ...", flush=True)
        one, four = make_files(work / "one", args.n), make_files(work / "four", args.n)
        paced = make_files(work / "paced", args.paced)

        dcmtk_port = free_port()
        (work / "dcmtk").mkdir()
        dcmtk = receive_rate(
            processes,
            "DCMTK storescp",
            ["storescp", "-od", str(work / "dcmtk"), str(dcmtk_port)],
            dcmtk_port,
            "ANY",
            one,
            work / "dcmtk.log",
        )
        py_port = free_port()
        (work / "pynetdicom").mkdir()
        pynetdicom = receive_rate(
            processes,
            "pynetdicom storescp",
            [
                sys.executable,
                "-m",
                "pynetdicom",
                "storescp",
                "-od",
                str(work / "pynetdicom"),
                str(py_port),
            ],
            py_port,
            "ANY",
            one,
            work / "pynetdicom.log",
        )
        orthanc = orthanc_rate(processes, work, one)
        bare = bare_model_rate(one)

        pacs_port, pacs = free_port(), work / "pacs"
        pacs.mkdir()
        processes.start(
            ["storescp", "-aet", "PACS", "-od", str(pacs), str(pacs_port)],
            work / "pacs.log",
            env=DCMTK_ENV,
        )
        wait_for(lambda: port_open(pacs_port), 60, "the PACS")
        service = Service(processes, work, pacs_port)
        memory = PeakSampler(service.process.pid)
        cpu_before = cpu_s(service.process.pid)
        start = time.perf_counter()
        accept_1 = args.n / send(service.port, one, "ECG2AGE")
        wait_for(lambda: len(list(pacs.glob("SR*"))) >= args.n, 3600, "the burst's SRs")
        e2e = args.n / (time.perf_counter() - start)
        cpu_after = cpu_s(service.process.pid)
        used_ms = {
            pid: 1000 * (cpu_after[pid] - cpu_before.get(pid, 0.0)) / args.n for pid in cpu_after
        }
        listener_ms = used_ms.pop(service.process.pid)
        worker_ms = sum(used_ms.values())
        received = service.received_at()
        arrived = sr_arrivals(pacs)
        burst_latency = percentiles([arrived[u] - received[u] for u in arrived if u in received])
        accept_4 = args.n / send(service.port, four, "ECG2AGE", associations=4)
        wait_for(lambda: len(list(pacs.glob("SR*"))) >= 2 * args.n, 3600, "the SRs")
        before = set(sr_arrivals(pacs))
        sent_at = {}
        for path in paced:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            tick = time.time()
            send(service.port, [path], "ECG2AGE")
            sent_at[uid] = time.time()
            time.sleep(max(0.0, 1.0 - (time.time() - tick)))
        expected = 2 * args.n + args.paced
        wait_for(lambda: len(list(pacs.glob("SR*"))) >= expected, 600, "paced")
        arrived = {u: t for u, t in sr_arrivals(pacs).items() if u not in before}
        paced_latency = percentiles([arrived[u] - sent_at[u] for u in sent_at])
        peak_rss, peak_pss = rss_mb(service.process.pid), memory.stop()
        service.stop()

        two_files = make_files(work / "two-workers", args.n)
        two = Service(processes, work, pacs_port, workers=2)
        memory = PeakSampler(two.process.pid)
        start = time.perf_counter()
        accept_two = args.n / send(two.port, two_files, "ECG2AGE")
        expected += args.n
        wait_for(lambda: len(list(pacs.glob("SR*"))) >= expected, 3600, "2 workers' SRs")
        e2e_two = args.n / (time.perf_counter() - start)
        peak_rss_two, peak_pss_two = rss_mb(two.process.pid), memory.stop()
        two.stop()

        backlog_files = make_files(work / "backlog", args.backlog)
        receiver = Service(processes, work, pacs_port, workers=0)
        accept_receive_only = args.backlog / send(receiver.port, backlog_files, "ECG2AGE")
        receive_only_rss = rss_mb(receiver.process.pid)
        receiver.stop()
        drained = expected + args.backlog
        drainer = Service(processes, work, pacs_port)
        drainer_start = time.perf_counter()  # from "listening on", model loaded
        memory = PeakSampler(drainer.process.pid)
        wait_for(lambda: len(list(pacs.glob("SR*"))) >= drained, 7200, "the backlog's SRs")
        drain_rate = args.backlog / (time.perf_counter() - drainer_start)
        backlog_rss, backlog_pss = rss_mb(drainer.process.pid), memory.stop()
        drainer.stop()

        rows = [
            ("accept, 1 association (ECG/s)", f"{accept_1:.1f}"),
            ("accept, 4 associations (ECG/s)", f"{accept_4:.1f}"),
            ("end-to-end, burst of N (ECG/s)", f"{e2e:.1f}"),
            (
                "CPU per ECG in that burst: listener / worker (ms)",
                f"{listener_ms:.1f} / {worker_ms:.1f}",
            ),
            ("latency in burst p50/p95/max (s)", "/".join(f"{v:.2f}" for v in burst_latency)),
            ("latency at 1 ECG/s p50/p95/max (s)", "/".join(f"{v:.2f}" for v in paced_latency)),
            (
                "peak memory of serve: sum of peak RSS / peak PSS (MB)",
                f"{peak_rss:.0f} / {peak_pss:.0f}",
            ),
            (
                f"accept, receive-only node ([pipeline] workers = 0), {args.backlog} ECGs (ECG/s)",
                f"{accept_receive_only:.1f}",
            ),
            ("[pipeline] workers = 2: accept, 1 association (ECG/s)", f"{accept_two:.1f}"),
            ("[pipeline] workers = 2: end-to-end, burst of N (ECG/s)", f"{e2e_two:.1f}"),
            (
                "[pipeline] workers = 2: peak memory, sum of peak RSS / peak PSS (MB)",
                f"{peak_rss_two:.0f} / {peak_pss_two:.0f}",
            ),
            (
                f"RSS receiving a {args.backlog} backlog, receive-only (MB)",
                f"{receive_only_rss:.0f}",
            ),
            (
                "peak memory draining the backlog: sum of peak RSS / peak PSS (MB)",
                f"{backlog_rss:.0f} / {backlog_pss:.0f}",
            ),
            ("backlog drain rate (ECG/s)", f"{drain_rate:.1f}"),
            ("baseline: bare model, best batch (ECG/s)", f"{bare:.1f}"),
            ("baseline: pynetdicom storescp (ECG/s)", f"{pynetdicom:.1f}"),
            ("baseline: DCMTK storescp (ECG/s)", f"{dcmtk:.1f}"),
            ("baseline: Orthanc (ECG/s)", f"{orthanc:.1f}" if orthanc else "not installed"),
            ("ratio e2e / Orthanc (1 worker / 2 workers)", ratio_pair(e2e, e2e_two, orthanc)),
            ("ratio e2e / bare model (1 worker / 2 workers)", ratio_pair(e2e, e2e_two, bare)),
            ("ratio accept / pynetdicom storescp", f"{accept_1 / pynetdicom:.2f}"),
            (
                "ratio accept of a receive-only node / pynetdicom storescp",
                f"{accept_receive_only / pynetdicom:.2f}",
            ),
            (
                "pynetdicom SCU stalls while delivering (response taken by its reactor thread, "
                "30 s DIMSE timeout, then retried)",
                str(scu_stalls(work)),
            ),
            ("ratio accept / DCMTK storescp", f"{accept_1 / dcmtk:.2f}"),
        ]
    finally:
        processes.kill_all()
    header = (
        f"# ecg2age-dicom end-to-end benchmark, {dt.date.today()}\n\n"
        f"`benchmarks/bench_e2e.py --n {args.n} --backlog {args.backlog} --paced "
        f"{args.paced}`, {os.cpu_count()} CPUs, N = {args.n} ECGs (10 s, 12 leads, "
        "half 500 Hz, half 1000 Hz), SQLite, default model, DCMTK storescu over one "
        "association unless said.\n\n| measure | value |\n|---|---|\n"
    )
    table = header + "".join(f"| {name} | {value} |\n" for name, value in rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
