"""Bulk scoring: ECG/s of ``ecg2age-dicom predict FOLDER --output FILE`` beside the bare model.

Run: ``.venv/bin/python -m benchmarks.bench_bulk [--n 10000] [--runs 3] [--jobs 0 1]``
(``make bench`` runs it with the defaults).

The files are real ECGs: the PTB-XL records at their native 500 Hz of folds 1-8
(``../shared/data/external/ptbxl500.npz``; folds 9-10 are kept for reporting accuracy), written
as DICOM 12-lead ECGs and repeated with new UIDs up to N files. Each run is the whole command
as a user starts it, in a subprocess: its rate is N over the wall clock from start to exit
(start-up and model load included). The steady rate leaves out the start: rows written after
the first row, over the time since it appeared. The bare model is
:func:`benchmarks.bench_e2e.bare_model_rate` (its best batch, in this process) on the same
ECGs. Figures: median (worst) of the runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.bench_e2e import CARD, bare_model_rate
from ecg2age_dicom.training.data import load_ptbxl500
from tests.ecg_factory import make_ecg
from tests.peers import CLI, ROOT

DATA = ROOT.parent / "shared" / "data"


def make_files(folder: Path, count: int) -> list[Path]:
    """``count`` DICOM ECGs from the real 500 Hz records of folds 1-8, in turn."""
    records = load_ptbxl500(DATA, tuple(range(1, 9)))
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        record = index % len(records.ages)
        ecg = make_ecg(
            fs=500, signal=records.signals[record], patient_age=f"{int(records.ages[record]):03d}Y"
        )
        files.append(ecg.write(folder / f"{index:05d}.dcm"))
    return files


def timed_run(folder: Path, output: Path, jobs: int, count: int, card: Path) -> tuple[float, float]:
    """One ``predict`` of the folder: (ECG/s over the whole command, steady ECG/s)."""
    output.unlink(missing_ok=True)
    command = [str(CLI), "predict", str(folder), "--format", "csv", "--output", str(output)]
    command += ["--card", str(card)]
    start = time.perf_counter()
    process = subprocess.Popen([*command, "--jobs", str(jobs)], cwd=ROOT, stderr=subprocess.DEVNULL)
    first: tuple[float, int] | None = None
    while process.poll() is None:
        time.sleep(0.05)
        if first is None and output.exists():
            rows = output.read_bytes().count(b"\n") - 1
            if rows > 0:
                first = (time.perf_counter(), rows)
    end = time.perf_counter()
    rows = output.read_bytes().count(b"\n") - 1
    if rows != count:
        raise RuntimeError(
            f"predict wrote {rows} rows for {count} files (exit {process.returncode})"
        )
    first = first or (start, 0)
    return count / (end - start), (count - first[1]) / (end - first[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--card",
        type=Path,
        default=CARD,
        help="model card (the ECG2Age-sized stand-in: var/ecg2age-sized/model.toml, "
        "made by python -m benchmarks.bench_big_model)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as work:
        folder = Path(work) / "files"
        files = make_files(folder, args.n)
        bare = [bare_model_rate(files[:64], args.card) for _ in range(args.runs)]
        print(
            f"{args.n} files (real PTB-XL 500 Hz ECGs, folds 1-8), {os.cpu_count()} CPUs, "
            f"model {args.card}; "
            f"median (worst) of {args.runs} runs"
        )
        print(f"{'measure':<52}{'ECG/s':>18}{'/ bare':>14}")
        base = statistics.median(bare)
        print(f"{'bare model, best batch':<52}{base:>10.1f} ({min(bare):.1f})")
        for jobs in args.jobs:
            runs = [
                timed_run(folder, Path(work) / "out.csv", jobs, args.n, args.card)
                for _ in range(args.runs)
            ]
            for label, rates in (
                ("whole command", [whole for whole, _ in runs]),
                ("steady, after the first row", [steady for _, steady in runs]),
            ):
                name = f"predict --jobs {jobs}: {label}"
                middle, worst = statistics.median(rates), min(rates)
                print(
                    f"{name:<52}{middle:>10.1f} ({worst:.1f})"
                    f"{middle / base:>8.2f} ({worst / base:.2f})"
                )


if __name__ == "__main__":
    main()
