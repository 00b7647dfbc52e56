"""The service with an ECG2Age-sized model: end to end against that model's bare rate.

Run: ``.venv/bin/python -m benchmarks.bench_big_model [--n 200] [--runs 2]``. Builds once,
under ``var/`` (never committed), a stand-in of the real ECG2Age file's size: about 100 M
parameters, random weights, built the way ml4h builds it
(:func:`tests.model_factory.ecg2age_sized_model`), with a card like ECG2Age's (dict output
key, ml4h's de-normalisation). It measures the model's bare batched rate through the scoring
path (best of batch 16 and 32, ``--runs`` times), then for each configuration in
:data:`CONFIGURATIONS` bursts of N fresh ECGs through ``serve`` (outputs SR + PDF, DCMTK
``storescp`` as the PACS): end-to-end rate (until the last object is at the PACS), its ratio
to the bare rate (target >= 0.9), the CPU the service spent per ECG (listener and workers)
and the workers' peak RSS each. Median (worst) of the runs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.bench_e2e import (
    Service,
    bare_model_rate,
    burst,
    make_files,
    median_worst,
    process_tree,
    rss_mb,
)
from ecg2age_dicom.model import sha256_of
from tests.model_factory import ML4H_OUTPUT, ecg2age_sized_model
from tests.peers import ROOT, Processes, free_port, start_storescp

MODEL_DIR = ROOT / "var" / "ecg2age-sized"
# (label, [pipeline] workers, [model] keys)
CONFIGURATIONS = [
    ("1 worker, TensorFlow's default threads", 1, ""),
    ("2 workers, 1 intra-op thread each", 2, "intra_op_threads = 1\ninter_op_threads = 1"),
    ("2 workers, TensorFlow's default threads", 2, ""),
]


def worker_pids(pid: int) -> list[int]:
    """The service's worker processes (not multiprocessing's resource tracker)."""
    return [
        child
        for child in process_tree(pid)[1:]
        if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def stand_in_card() -> Path:
    """The stand-in's card (the model built first when missing)."""
    model = MODEL_DIR / "model.keras"
    if not model.is_file():
        MODEL_DIR.mkdir(parents=True, exist_ok=True)
        ecg2age_sized_model(model)
    card = MODEL_DIR / "model.toml"
    card.write_text(
        f'name = "ECG2Age-sized stand-in"\nversion = "0"\nintended_use = "benchmark only"\n'
        f'file = "model.keras"\nsha256 = "{sha256_of(model)}"\n'
        f"size_bytes = {model.stat().st_size}\n"
        f'[output]\nkey = "{ML4H_OUTPUT}"\nscale = 20.7367\noffset = 54.4974\n'
    )
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="ECGs per burst")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    card = stand_in_card()
    size_mb = (MODEL_DIR / "model.keras").stat().st_size / 1e6
    work = Path(tempfile.mkdtemp(prefix="ecg2age-big-", dir=ROOT / "var"))
    processes = Processes()
    try:
        inputs = make_files(work / "inputs", 64)
        bare = [bare_model_rate(inputs, card, sizes=(16, 32)) for _ in range(args.runs)]
        print(f"stand-in: {size_mb:.0f} MB; bare model {median_worst(bare)} ECG/s", flush=True)
        pacs_port, pacs = free_port(), work / "pacs"
        start_storescp(processes, pacs_port, pacs)
        delivered = 0
        rows = []
        for label, workers, model_keys in CONFIGURATIONS:
            service = Service(
                processes, work, pacs_port, workers=workers, card=card, model=model_keys
            )
            results = []
            for run in range(args.runs):
                files = make_files(work / f"burst-{workers}-{run}", args.n)
                results.append(burst(service, pacs, files, delivered))
                delivered += args.n * len(service.outputs)
            rates = [result["e2e"] for result in results]
            cpu = statistics.median(r["worker_ms"] + r["listener_ms"] for r in results)
            worker_rss = [rss_mb(pid) for pid in worker_pids(service.process.pid)]
            service.stop()
            ratio = statistics.median(rates) / statistics.median(bare)
            rows.append((label, median_worst(rates), f"{ratio:.2f}", f"{cpu:.0f}", worker_rss))
            print(f"{label}: {rows[-1][1]} ECG/s, ratio {ratio:.2f}", flush=True)
    finally:
        processes.kill_all()
        shutil.rmtree(work, ignore_errors=True)
    print(
        "\n| configuration | end to end (ECG/s) | / bare (target >= 0.9) | service CPU per ECG "
        "(ms) | RSS per worker (MB) |"
    )
    print("|---|---|---|---|---|")
    for label, rate, ratio, cpu, rss in rows:
        print(f"| {label} | {rate} | {ratio} | {cpu} | {', '.join(f'{m:.0f}' for m in rss)} |")
    print(f"\nbare model, best of batch 16/32: {median_worst(bare)} ECG/s")


if __name__ == "__main__":
    main()
