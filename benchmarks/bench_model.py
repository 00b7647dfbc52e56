"""Model throughput: ECG/s of a model through the scoring path at batch 1, 8, 32 and 64.

Run: ``.venv/bin/python -m benchmarks.bench_model [--card model_zoo/ECG2Age-PTBXL/model.toml]``
(``make bench`` runs it). Inputs are pydicom's real sample ECG through the serving path
(:func:`ecg2age_dicom.scoring.prepare`: decode, resample to 500 Hz); each figure is the
median (and the worst) of several timed repeats of :func:`ecg2age_dicom.scoring.score`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from pydicom.data import get_testdata_file

from ecg2age_dicom import scoring
from ecg2age_dicom.dicomfile import read_dataset
from ecg2age_dicom.model import ModelRuntime


def batch_rates(runtime: ModelRuntime, batch: int, repeats: int) -> list[float]:
    sample = read_dataset(Path(str(get_testdata_file("waveform_ecg.dcm"))))
    inputs = [scoring.prepare(sample, runtime.card).model_input] * batch
    scoring.score(runtime, inputs)  # build the graph for this batch size
    calls = max(1, 256 // batch)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            scoring.score(runtime, inputs)
        rates.append(calls * batch / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card", type=Path, default=Path("model_zoo/ECG2Age-PTBXL/model.toml"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    runtime = ModelRuntime.load(args.card)
    print(f"model {runtime.card.name} {runtime.card.version} ({args.card})")
    print(f"{'batch':<10}{'median ECG/s':>14}{'worst ECG/s':>13}")
    medians = {}
    for batch in (1, 8, 32, 64):
        rates = batch_rates(runtime, batch, args.repeats)
        medians[batch] = statistics.median(rates)
        print(f"{batch:<10}{medians[batch]:>14.1f}{min(rates):>13.1f}")
    print(f"batching gain: batch 32 / batch 1 = {medians[32] / medians[1]:.1f}x (medians)")


if __name__ == "__main__":
    main()
