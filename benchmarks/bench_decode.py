"""Decode + resample time per ECG: median ms/ECG over many files, 1000 Hz and 500 Hz inputs.

Run: ``.venv/bin/python benchmarks/bench_decode.py [--files N]`` (``make bench`` runs it).
Datasets are read once; the timed step is ``waveform.decode`` + ``waveform.to_model_input``,
what the pipeline does per ECG. Target on a 2-core machine: <= 2 ms/ECG.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecg2age_dicom import waveform
from tests.ecg_factory import make_ecg


def time_per_ecg(datasets: list, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        for dataset in datasets:
            start = time.perf_counter()
            waveform.to_model_input(waveform.decode(dataset))
            times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100, help="distinct ECGs per input kind")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    sample = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    cases = {
        "pydicom sample, 1000 Hz, 12 leads": [sample] * args.files,
        "factory, 1000 Hz, 12 leads": [make_ecg(fs=1000).dataset for _ in range(args.files)],
        "factory, 500 Hz, 12 leads": [make_ecg(fs=500).dataset for _ in range(args.files)],
        "factory, 500 Hz, 8 leads (4 derived)": [
            make_ecg(fs=500, leads=("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")).dataset
            for _ in range(args.files)
        ],
    }
    time_per_ecg(cases["factory, 500 Hz, 12 leads"][:5], 1)  # warm caches and filters
    print(f"{'input':<40}{'n':>6}{'median ms':>11}{'p95 ms':>9}{'ECG/s':>8}")
    for name, datasets in cases.items():
        times = sorted(time_per_ecg(datasets, args.repeats))
        median = statistics.median(times)
        p95 = times[int(0.95 * (len(times) - 1))]
        print(f"{name:<40}{len(times):>6}{median:>11.2f}{p95:>9.2f}{1000 / median:>8.0f}")
    print("target: <= 2 ms/ECG (decode + resample to 5000 x 12 @ 500 Hz)")


if __name__ == "__main__":
    main()
