"""Where the worker's time goes, by ``[report] outputs``: the pipeline and the delivery apart.

Run: ``.venv/bin/python -m benchmarks.bench_worker [--n 300] [--runs 3]``. For each of the
outputs ``sr`` and ``sr, pdf`` (and ``sr, pdf, sc`` with ``--sc``), R times: N fresh factory
ECGs are received into a new spool and SQLite database (not timed), the pipeline of one
worker processes them in this process (read, prepare, quality gate, model, report objects,
their files and rows), then one deliverer sends every object to DCMTK's storescp over one
association per burst. It prints wall and CPU ms per ECG of each phase, median (worst run).
CPU is this process's, all threads (pynetdicom's included). The service runs both phases in
one worker process, so their CPU sums to what bounds its throughput on one core.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ecg2age_dicom import logs
from ecg2age_dicom.config import load_settings
from ecg2age_dicom.delivery import Deliverer
from ecg2age_dicom.model import ModelRuntime
from ecg2age_dicom.pipeline import Pipeline
from ecg2age_dicom.receive import Receiver
from ecg2age_dicom.spool import Spool
from ecg2age_dicom.store import make_engine, session_factory
from ecg2age_dicom.store.db import upgrade
from tests.ecg_factory import make_ecg
from tests.peers import ROOT, Processes, free_port, start_storescp
from tests.receive_factory import receive

CARD = ROOT / "model_zoo" / "ECG2Age-PTBXL" / "model.toml"


def one_run(work: Path, runtime: ModelRuntime, outputs: list[str], n: int) -> dict[str, float]:
    """Wall and CPU ms per ECG of the pipeline and of the delivery, for N fresh ECGs."""
    port, processes = free_port(), Processes()
    try:
        start_storescp(processes, port, work / "pacs")
        config = work / "ecg2age.toml"
        config.write_text(
            f'[[destinations]]\nname = "PACS"\nae_title = "PACS"\nhost = "127.0.0.1"\n'
            f"port = {port}\n"
        )
        engine = make_engine(f"sqlite:///{work / 'db.sqlite3'}")
        upgrade(engine)
        sessions = session_factory(engine)
        spool = Spool(work / "spool")
        receiver = Receiver(sessions, spool, max_bytes=10_000_000)
        for i in range(n):
            ecg = make_ecg(fs=500 if i % 2 else 1000, patient_id=f"BENCH-{i:05d}")
            receive(receiver, ecg.write(work / "ecg.dcm"))
        pipeline = Pipeline(sessions, runtime, spool, ["PACS"], outputs=outputs)
        deliverer = Deliverer(sessions, load_settings(config))
        marks = [(time.perf_counter(), time.process_time())]
        pipeline.run_until_idle()
        marks.append((time.perf_counter(), time.process_time()))
        deliverer.run_until_done()
        marks.append((time.perf_counter(), time.process_time()))
        deliverer.close()
        engine.dispose()
    finally:
        processes.kill_all()
    (start_wall, start_cpu), (mid_wall, mid_cpu), (end_wall, end_cpu) = marks
    per_ecg = 1000 / n
    return {
        "pipeline wall": (mid_wall - start_wall) * per_ecg,
        "pipeline CPU": (mid_cpu - start_cpu) * per_ecg,
        "delivery wall": (end_wall - mid_wall) * per_ecg,
        "delivery CPU": (end_cpu - mid_cpu) * per_ecg,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="ECGs per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sc", action="store_true", help="also with the Secondary Capture")
    args = parser.parse_args()
    logs.configure(logging.INFO)  # as the service's workers log (to stderr)
    runtime = ModelRuntime.load(CARD)
    variants = [["sr"], ["sr", "pdf"]] + ([["sr", "pdf", "sc"]] if args.sc else [])
    (ROOT / "var").mkdir(exist_ok=True)

    def measured(outputs: list[str], n: int) -> dict[str, float]:
        work = Path(tempfile.mkdtemp(prefix="ecg2age-worker-", dir=ROOT / "var"))
        try:
            return one_run(work, runtime, outputs, n)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    measured(variants[-1], 40)  # warm-up: the model's first calls, fonts, caches
    print(f"{args.n} ECGs, {args.runs} runs; ms per ECG, median (worst run)")
    for outputs in variants:
        runs = [measured(outputs, args.n) for _ in range(args.runs)]
        cells = [
            f"{key} {statistics.median(r[key] for r in runs):.2f} ({max(r[key] for r in runs):.2f})"
            for key in runs[0]
        ]
        print(f"  {' + '.join(outputs):<14}" + "; ".join(cells))


if __name__ == "__main__":
    main()
