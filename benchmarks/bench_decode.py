"""Decode + resample time per ECG: median ms/ECG over many files, 1000 Hz and 500 Hz inputs.

Run: ``.venv/bin/python -m benchmarks.bench_decode [--files N]`` (``make bench`` runs it).
Each ECG is timed three ways: the listener's header check from the file's bytes (parsing and
:func:`~ecg2age_dicom.waveform.rhythm_group`, no sample decoded), the worker's decode +
resample from an already parsed Dataset, and the same from the bytes (pydicom parsing
included: what the worker really pays, since pydicom converts each element on first access).
Then the wait on the disk that the listener adds before it answers, which a plain storescp
does not: a file's fsync, rename and its folder's fsync (:func:`~ecg2age_dicom.dicomfile.
move_durably`) and one SQLite commit with the project's pragmas, under ``var/``.
Target on a 2-core machine: <= 2 ms/ECG for decode + resample.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from ecg2age_dicom import waveform
from ecg2age_dicom.dicomfile import move_durably
from ecg2age_dicom.store import make_engine
from tests.ecg_factory import make_ecg
from tests.peers import ROOT


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


def durable_write_ms(encoded: bytes, count: int) -> tuple[list[float], list[float]]:
    """ms per ECG of making a received file durable, and of one SQLite commit."""
    (ROOT / "var").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ecg2age-disk-", dir=ROOT / "var"))
    engine = make_engine(f"sqlite:///{work / 'db.sqlite3'}")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE received (uid TEXT)")
        files, commits = [], []
        for index in range(count):
            incoming = work / f"{index}.part"
            incoming.write_bytes(encoded)
            start = time.perf_counter()
            move_durably(incoming, work / "received" / f"{index}.dcm")
            files.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            with engine.begin() as connection:
                connection.exec_driver_sql("INSERT INTO received VALUES (?)", (str(index),))
            commits.append((time.perf_counter() - start) * 1000)
        return files, commits
    finally:
        engine.dispose()
        shutil.rmtree(work, ignore_errors=True)


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
    received = cases["factory, 1000 Hz, 12 leads"][0]
    files, commits = durable_write_ms(received, 3 * args.files)
    print(
        f"the listener's wait on the disk, {len(files)} ECGs of "
        f"{len(received) // 1000} KB, median (90th percentile) "
        f"ms: file fsync + rename + folder fsync {statistics.median(files):.2f} "
        f"({statistics.quantiles(files, n=10)[-1]:.2f}), SQLite commit "
        f"{statistics.median(commits):.2f} ({statistics.quantiles(commits, n=10)[-1]:.2f})"
    )


if __name__ == "__main__":
    main()
