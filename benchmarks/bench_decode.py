"""Decode + resample time per ECG: median ms/ECG over many files, 1000 Hz and 500 Hz inputs.

Run: ``.venv/bin/python -m benchmarks.bench_decode [--files N]`` (``make bench`` runs it).
Each ECG is timed three ways: the listener's header check from the file's bytes (parsing and
:func:`~ecg2age_dicom.waveform.rhythm_group`, no sample decoded), the worker's decode +
resample from an already parsed Dataset, and the same from the bytes (pydicom parsing
included: what the worker really pays, since pydicom converts each element on first access).
Target on a 2-core machine: <= 2 ms/ECG for decode + resample.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from ecg2age_dicom import waveform
from tests.ecg_factory import make_ecg


def time_per_ecg(
    encoded: list[bytes], repeats: int
) -> tuple[list[float], list[float], list[float]]:
    """ms per ECG: header check from bytes, decode from a parsed Dataset (second access),
    decode from bytes (fresh parse)."""
    header, warm, cold = [], [], []
    for _ in range(repeats):
        for data in encoded:
            start = time.perf_counter()
            waveform.rhythm_group(pydicom.dcmread(io.BytesIO(data)))
            header.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            dataset = pydicom.dcmread(io.BytesIO(data))
            waveform.to_model_input(waveform.decode(dataset))
            cold.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            waveform.to_model_input(waveform.decode(dataset))
            warm.append((time.perf_counter() - start) * 1000)
    return header, warm, cold


def encode(dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100, help="distinct ECGs per input kind")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    sample = Path(get_testdata_file("waveform_ecg.dcm")).read_bytes()
    eight = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    cases = {
        "pydicom sample, 1000 Hz, 12 leads": [sample] * args.files,
        "factory, 1000 Hz, 12 leads": [
            encode(make_ecg(fs=1000).dataset) for _ in range(args.files)
        ],
        "factory, 500 Hz, 12 leads": [encode(make_ecg(fs=500).dataset) for _ in range(args.files)],
        "factory, 500 Hz, 8 leads (4 derived)": [
            encode(make_ecg(fs=500, leads=eight).dataset) for _ in range(args.files)
        ],
    }
    time_per_ecg(cases["factory, 500 Hz, 12 leads"][:5], 1)  # warm caches and filters
    print(
        f"{'input':<40}{'n':>6}{'header check ms':>17}{'decode+resample ms':>20}"
        f"{'with parsing ms':>17}"
    )
    for name, encoded in cases.items():
        header, warm, cold = time_per_ecg(encoded, args.repeats)
        print(
            f"{name:<40}{len(warm):>6}{statistics.median(header):>17.2f}"
            f"{statistics.median(warm):>20.2f}{statistics.median(cold):>17.2f}"
        )
    print("medians; target: <= 2 ms/ECG for decode + resample to 5000 x 12 @ 500 Hz")


if __name__ == "__main__":
    main()
