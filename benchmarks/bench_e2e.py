"""End-to-end benchmark: ecg2age-dicom against bare baselines, measured in one run.

Run: ``make bench`` or ``.venv/bin/python -m benchmarks.bench_e2e [--n 500] [--runs 3]
[--backlog 10000]``. Starts ``serve`` (SQLite, default model, default ``[pipeline] workers =
1``) with DCMTK ``storescp`` as the PACS and measures, for ``--runs`` bursts of N fresh ECGs
each: the accept rate over one association, end-to-end throughput (until the last report object,
SR and PDF by default, is at the PACS; and, alternating with those bursts, as many to a second
service with ``[report] outputs = ["sr"]``, its own database and spool), the CPU each process
spent per ECG, and the delivery stalls (pynetdicom's "unexpected message" and DIMSE timeouts in
the log); then, once: accept over 4 associations, latency receipt -> SR arrival (paced at 1
ECG/s and inside a burst), memory, a burst with ``[pipeline] workers = 2``, and memory with a
backlog of received-but-unprocessed ECGs (a receive-only server, then a worker that drains it).
Repeated figures are printed as median and worst over the runs. The service is several
processes, so memory is the sum over them of each one's peak RSS (an upper bound: the shared
TensorFlow libraries count once per worker) and the peak of their summed PSS (shared pages split
between the processes: what the service really holds). Baselines in the same run, each measured
``--runs`` times: the bare model's best batched rate on the same inputs, pynetdicom's storescp
app, DCMTK's storescp and Orthanc (when installed) receiving the same files. Every DCMTK-based
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
from collections.abc import Callable
from pathlib import Path

import pydicom

from ecg2age_dicom import scoring
from ecg2age_dicom.dicomfile import read_dataset
from ecg2age_dicom.model import ModelRuntime
from ecg2age_dicom.store import make_engine, session_factory
from ecg2age_dicom.store.models import ReceivedInstance
from tests.ecg_factory import make_ecg
from tests.peers import (
    CLI,
    DCMTK_ENV,
    ROOT,
    Processes,
    free_port,
    orthanc_config,
    port_open,
    start_storescp,
    wait_for,
)

CARD = ROOT / "model_zoo" / "ECG2Age-PTBXL" / "model.toml"
STALL_LINES = ("Received unexpected", "DIMSE timeout reached while waiting")


def make_files(folder: Path, count: int) -> list[Path]:
    """Fresh ECGs (new UIDs), alternating 500 Hz and 1000 Hz, 10 s, 12 leads, each of its own
    patient (the report writers keep the last few hundred encoded elements)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        make_ecg(fs=500 if i % 2 else 1000, patient_id=f"BENCH-{i:05d}").write(
            folder / f"{i:05d}.dcm"
        )
        for i in range(count)
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
    port = free_port()
    config = orthanc_config(work, "ORTHANC", port, free_port())
    return receive_rate(
        processes, "Orthanc", [binary, str(config)], port, "ORTHANC", files, work / "orthanc.log"
    )


def bare_model_rate(
    inputs: list[Path], card: Path = CARD, sizes: tuple[int, ...] = (32, 64)
) -> float:
    """The model alone, through the scoring path, at its best batch size of ``sizes``."""
    runtime = ModelRuntime.load(card)
    batch = [scoring.prepare(read_dataset(p), runtime.card).model_input for p in inputs[:64]]
    best = 0.0
    for size in sizes:
        scoring.score(runtime, batch[:size])
        start = time.perf_counter()
        for _ in range(4):
            scoring.score(runtime, batch[:size])
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
        spool: Path | None = None,
        outputs: tuple[str, ...] = ("sr", "pdf"),
        card: Path = CARD,
        model: str = "",
        extra: str = "",
        pacs_ae_title: str = "PACS",
        listener_port: int | None = None,
    ) -> None:
        self.processes, self.work = processes, work
        self.port = listener_port or free_port()
        self.database = database or work / "db.sqlite3"
        config = work / f"serve-{self.port}.toml"
        config.write_text(f"""
[listener]
port = {self.port}
max_associations = 16
[storage]
database_url = "sqlite:///{self.database}"
spool_dir = "{spool or work / "spool"}"
[model]
card = "{card}"
{model}
[report]
outputs = {json.dumps(list(outputs))}
[pipeline]
workers = {workers}
poll_interval_s = 0.1
[web]
port = {free_port()}
[[destinations]]
name = "PACS"
ae_title = "{pacs_ae_title}"
host = "127.0.0.1"
port = {pacs_port}
[delivery]
interval_s = 0.2
{extra}
""")
        log = work / f"serve-{self.port}.log"
        self.outputs = outputs
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


def objects_at(pacs: Path) -> int:
    """Report objects (SRs, PDFs) the PACS has received so far."""
    return sum(1 for _ in pacs.iterdir())


def sr_arrivals(pacs: Path) -> dict[str, float]:
    """ECG SOP Instance UID -> when its SR file appeared at the PACS."""
    arrivals = {}
    for path in pacs.glob("SR*"):
        evidence = pydicom.dcmread(path).CurrentRequestedProcedureEvidenceSequence[0]
        uid = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        arrivals[uid.ReferencedSOPInstanceUID] = path.stat().st_mtime
    return arrivals


def scu_stalls(work: Path) -> int:
    """Lost responses and DIMSE timeouts of deliveries, in all serve logs so far."""
    text = "".join(log.read_text(errors="replace") for log in work.glob("serve-*.log"))
    return sum(text.count(line) for line in STALL_LINES)


def median_worst(values: list[float], worst: str = "min") -> str:
    """ "median (worst)" of repeated figures; the worst of a rate is its minimum."""
    pick = min if worst == "min" else max
    return f"{statistics.median(values):.1f} ({pick(values):.1f})"


def repeated(runs: int, measure: Callable[[int], float]) -> list[float]:
    return [measure(run) for run in range(runs)]


def ratio_pair(first: float, second: float, baseline: float | None) -> str:
    return f"{first / baseline:.2f} / {second / baseline:.2f}" if baseline else "n/a"


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return (statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))], ordered[-1])


def burst(service: Service, pacs: Path, files: list[Path], delivered_before: int) -> dict:
    """One burst through a running service: accept and end-to-end rates (until its last report
    object is at the PACS), CPU per ECG of the listener and the workers, stalls in the log,
    latency receipt -> SR. ``delivered_before``: objects at the PACS before it."""
    stalls_before = scu_stalls(service.work)
    cpu_before = cpu_s(service.process.pid)
    start = time.perf_counter()
    accept = len(files) / send(service.port, files, "ECG2AGE")
    expected = delivered_before + len(files) * len(service.outputs)
    wait_for(lambda: objects_at(pacs) >= expected, 3600, "the burst's reports")
    e2e = len(files) / (time.perf_counter() - start)
    cpu_after = cpu_s(service.process.pid)
    used_ms = {
        pid: 1000 * (cpu_after[pid] - cpu_before.get(pid, 0.0)) / len(files) for pid in cpu_after
    }
    listener_ms = used_ms.pop(service.process.pid)
    received, arrived = service.received_at(), sr_arrivals(pacs)
    uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    latency = percentiles([arrived[u] - received[u] for u in uids])
    return {
        "accept": accept,
        "e2e": e2e,
        "listener_ms": listener_ms,
        "worker_ms": sum(used_ms.values()),
        "stalls": scu_stalls(service.work) - stalls_before,
        "latency_p95": latency[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="ECGs per burst")
    parser.add_argument("--runs", type=int, default=3, help="bursts, and runs of each baseline")
    parser.add_argument("--backlog", type=int, default=10000)
    parser.add_argument("--paced", type=int, default=20, help="ECGs sent at 1 per second")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / f"{dt.date.today()}.md"
    )
    args = parser.parse_args()
    (ROOT / "var").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ecg2age-bench-", dir=ROOT / "var"))
    processes = Processes()
    rows: list[tuple[str, str]] = []
    try:
        print(f"generating ECGs in {work} ...", flush=True)
        bursts = [make_files(work / f"burst{run}", args.n) for run in range(args.runs)]
        four, paced = make_files(work / "four", args.n), make_files(work / "paced", args.paced)

        def dcmtk_run(run: int) -> float:
            port, folder = free_port(), work / f"dcmtk{run}"
            folder.mkdir()
            command = ["storescp", "-od", str(folder), str(port)]
            return receive_rate(
                processes, "DCMTK storescp", command, port, "ANY", bursts[0], work / "dcmtk.log"
            )

        def pynetdicom_run(run: int) -> float:
            port, folder = free_port(), work / f"pynetdicom{run}"
            folder.mkdir()
            command = [
                sys.executable,
                "-m",
                "pynetdicom",
                "storescp",
                "-od",
                str(folder),
                str(port),
            ]
            return receive_rate(
                processes, "pynetdicom storescp", command, port, "ANY", bursts[0], work / "py.log"
            )

        dcmtk = repeated(args.runs, dcmtk_run)
        pynetdicom = repeated(args.runs, pynetdicom_run)
        orthanc_runs = [
            orthanc_rate(processes, work / f"o{run}", bursts[0]) for run in range(args.runs)
        ]
        orthanc = [rate for rate in orthanc_runs if rate is not None]
        bare = repeated(args.runs, lambda run: bare_model_rate(bursts[0]))

        pacs_port, pacs = free_port(), work / "pacs"
        start_storescp(processes, pacs_port, pacs)
        service = Service(processes, work, pacs_port)
        memory = PeakSampler(service.process.pid)
        objects = len(service.outputs)
        # The SR-only service beside it, with its own database and spool: the bursts of the
        # two alternate (A B, B A, ...) so that the ratio does not follow the machine's drift.
        sr_only = Service(
            processes,
            work,
            pacs_port,
            database=work / "sr-only.sqlite3",
            spool=work / "sr-only-spool",
            outputs=("sr",),
        )
        results, sr_only_e2e, delivered = [], [], 0
        for run, files in enumerate(bursts):
            sr_only_files = make_files(work / f"sr-only{run}", args.n)
            for kind in ("both", "sr") if run % 2 == 0 else ("sr", "both"):
                if kind == "both":
                    results.append(burst(service, pacs, files, delivered))
                    delivered += args.n * objects
                    print(f"burst {run + 1}, SR + PDF: {results[-1]}", flush=True)
                else:
                    sr_only_e2e.append(burst(sr_only, pacs, sr_only_files, delivered)["e2e"])
                    delivered += args.n
                    print(f"burst {run + 1}, SR only: {sr_only_e2e[-1]:.1f} ECG/s", flush=True)
        sr_only.stop()
        accept_4 = args.n / send(service.port, four, "ECG2AGE", associations=4)
        delivered += args.n * objects
        wait_for(lambda: objects_at(pacs) >= delivered, 3600, "the reports")
        before = set(sr_arrivals(pacs))
        sent_at = {}
        for path in paced:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            tick = time.time()
            send(service.port, [path], "ECG2AGE")
            sent_at[uid] = time.time()
            time.sleep(max(0.0, 1.0 - (time.time() - tick)))
        delivered += args.paced * objects
        wait_for(lambda: objects_at(pacs) >= delivered, 600, "paced")
        arrived = {u: t for u, t in sr_arrivals(pacs).items() if u not in before}
        paced_latency = percentiles([arrived[u] - sent_at[u] for u in sent_at])
        peak_rss, peak_pss = rss_mb(service.process.pid), memory.stop()
        service.stop()

        two = Service(processes, work, pacs_port, workers=2)
        memory = PeakSampler(two.process.pid)
        two_result = burst(two, pacs, make_files(work / "two-workers", args.n), delivered)
        delivered += args.n * objects
        peak_rss_two, peak_pss_two = rss_mb(two.process.pid), memory.stop()
        two.stop()

        backlog_files = make_files(work / "backlog", args.backlog)
        receiver = Service(processes, work, pacs_port, workers=0)
        accept_receive_only = args.backlog / send(receiver.port, backlog_files, "ECG2AGE")
        receive_only_rss = rss_mb(receiver.process.pid)
        receiver.stop()
        drained = delivered + args.backlog * objects
        drainer = Service(processes, work, pacs_port)
        drainer_start = time.perf_counter()  # from "listening on", model loaded
        memory = PeakSampler(drainer.process.pid)
        wait_for(lambda: objects_at(pacs) >= drained, 7200, "the backlog's reports")
        drain_rate = args.backlog / (time.perf_counter() - drainer_start)
        backlog_rss, backlog_pss = rss_mb(drainer.process.pid), memory.stop()
        drainer.stop()

        def each(key: str) -> list[float]:
            return [result[key] for result in results]

        def ratios(values: list[float], baseline: list[float]) -> str:
            if not baseline:
                return "n/a"
            base = statistics.median(baseline)
            return f"{statistics.median(values) / base:.2f} ({min(values) / base:.2f})"

        rows = [
            ("accept, 1 association (ECG/s)", median_worst(each("accept"))),
            ("end-to-end, burst of N, SR + PDF (ECG/s)", median_worst(each("e2e"))),
            ("end-to-end, burst of N, SR only (ECG/s)", median_worst(sr_only_e2e)),
            (
                "ratio end-to-end SR + PDF / SR only (target >= 0.7)",
                ratios(each("e2e"), sr_only_e2e),
            ),
            (
                "delivery stalls per burst (lost responses + DIMSE timeouts)",
                median_worst(each("stalls"), "max"),
            ),
            ("CPU per ECG: listener (ms)", median_worst(each("listener_ms"), "max")),
            ("CPU per ECG: worker (ms)", median_worst(each("worker_ms"), "max")),
            ("latency in a burst, p95 (s)", median_worst(each("latency_p95"), "max")),
            ("accept, 4 associations (ECG/s)", f"{accept_4:.1f}"),
            ("latency at 1 ECG/s p50/p95/max (s)", "/".join(f"{v:.2f}" for v in paced_latency)),
            (
                "peak memory of serve: sum of peak RSS / peak PSS (MB)",
                f"{peak_rss:.0f} / {peak_pss:.0f}",
            ),
            (
                f"accept, receive-only node ([pipeline] workers = 0), {args.backlog} ECGs (ECG/s)",
                f"{accept_receive_only:.1f}",
            ),
            (
                "[pipeline] workers = 2: accept / end-to-end (ECG/s)",
                f"{two_result['accept']:.1f} / {two_result['e2e']:.1f}",
            ),
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
            ("baseline: bare model, best batch (ECG/s)", median_worst(bare)),
            ("baseline: pynetdicom storescp (ECG/s)", median_worst(pynetdicom)),
            ("baseline: DCMTK storescp (ECG/s)", median_worst(dcmtk)),
            ("baseline: Orthanc (ECG/s)", median_worst(orthanc) if orthanc else "not installed"),
            ("ratio end-to-end SR + PDF / Orthanc", ratios(each("e2e"), orthanc)),
            ("ratio end-to-end SR only / Orthanc (target >= 0.8)", ratios(sr_only_e2e, orthanc)),
            (
                "ratio accept / pynetdicom storescp (target >= 0.9)",
                ratios(each("accept"), pynetdicom),
            ),
            ("ratio accept / DCMTK storescp", ratios(each("accept"), dcmtk)),
            ("ratio end-to-end / bare model", ratios(each("e2e"), bare)),
            (
                "ratio accept of a receive-only node / pynetdicom storescp",
                ratios([accept_receive_only], pynetdicom),
            ),
        ]
    finally:
        processes.kill_all()
    header = (
        f"# ecg2age-dicom end-to-end benchmark, {dt.date.today()}\n\n"
        f"`python -m benchmarks.bench_e2e --n {args.n} --runs {args.runs} --backlog "
        f"{args.backlog} --paced {args.paced}`, {os.cpu_count()} CPUs, N = {args.n} ECGs "
        "(10 s, 12 leads, half 500 Hz, half 1000 Hz), SQLite, default model, DCMTK storescu "
        "over one association unless said. Figures measured several times: median (worst) "
        f"over {args.runs} runs; ratios: median (worst burst) over the baseline's median.\n\n"
        "| measure | value |\n|---|---|\n"
    )
    table = header + "".join(f"| {name} | {value} |\n" for name, value in rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
