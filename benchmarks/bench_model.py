"""Model throughput: ECG/s of a model at batch 1, 8, 32, 64, and the micro-batcher's
throughput with 1 and 16 concurrent callers.

Run: ``.venv/bin/python benchmarks/bench_model.py [--card model_zoo/ECG2Age-PTBXL/model.toml]``
(``make bench`` runs it). Inputs are pydicom's real sample ECG through the serving path
(decode, resample to 500 Hz); each figure is the median of several timed repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ecg2age_dicom import waveform
from ecg2age_dicom.model import MicroBatcher, ModelRuntime


def batch_rate(runtime: ModelRuntime, ecg: np.ndarray, batch: int, repeats: int) -> float:
    inputs = np.repeat(ecg[None], batch, axis=0)
    runtime.predict(inputs)  # build the graph for this batch size
    calls = max(1, 256 // batch)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            runtime.predict(inputs)
        rates.append(calls * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def batcher_rate(
    runtime: ModelRuntime,
    ecg: np.ndarray,
    callers: int,
    total: int,
    batch_size: int,
    wait_ms: float,
) -> float:
    batcher = MicroBatcher(runtime.predict, batch_size, wait_ms)
    try:

        def one_caller(count: int) -> None:
            for _ in range(count):
                batcher.submit(ecg).result()

        start = time.perf_counter()
        with ThreadPoolExecutor(callers) as pool:
            list(pool.map(one_caller, [total // callers] * callers))
        return (total // callers) * callers / (time.perf_counter() - start)
    finally:
        batcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card", type=Path, default=Path("model_zoo/ECG2Age-PTBXL/model.toml"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    runtime = ModelRuntime.load(args.card)
    sample = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    ecg = runtime.card.input.model_input(waveform.decode(sample))
    print(f"model {runtime.card.name} {runtime.card.version} ({args.card})")
    print(f"{'mode':<34}{'ECG/s':>9}")
    rates = {}
    for batch in (1, 8, 32, 64):
        rates[batch] = batch_rate(runtime, ecg, batch, args.repeats)
        print(f"{f'batch {batch}':<34}{rates[batch]:>9.1f}")
    for callers in (1, 16):
        rate = batcher_rate(runtime, ecg, callers, 256, 32, 50)
        print(f"{f'micro-batcher, {callers} caller(s)':<34}{rate:>9.1f}")
    print(f"batching gain: batch 32 / batch 1 = {rates[32] / rates[1]:.1f}x")


if __name__ == "__main__":
    main()
