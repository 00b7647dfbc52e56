"""CPU per ECG of what the worker adds after decoding: the quality gate and each report object.

Run: ``.venv/bin/python -m benchmarks.bench_report [--files N] [--runs R]`` (``make bench`` runs
it). For N factory ECGs (500 and 1000 Hz) and pydicom's sample, prepared once through the
scoring path, it measures the process CPU time of :func:`~ecg2age_dicom.quality.assess`, of the
SR (fast path), of the PDF page (:func:`~ecg2age_dicom.pdf.render_page`), of the whole
Encapsulated PDF instance, of an ECG's SR and PDF made together (as the pipeline makes them:
the PDF's instance reuses the SR's encoded patient and study elements) and of the Secondary
Capture instance (page and image), R times each; it prints the median and the worst run's
median.
Target (issue 11): <= 25 ms CPU per PDF, median.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pydicom.data import get_testdata_file

from ecg2age_dicom import part10, pdf, quality, scoring, sr
from ecg2age_dicom.dicomfile import read_dataset
from ecg2age_dicom.model import load_card
from ecg2age_dicom.outputs import build_outputs
from tests.ecg_factory import make_ecg
from tests.peers import ROOT

CARD = ROOT / "model_zoo" / "ECG2Age-PTBXL" / "model.toml"


def cpu_ms(make: Callable[[scoring.Scorable], object], items: list[scoring.Scorable]) -> float:
    """Process CPU ms per item of ``make`` over ``items``, each item as new to the report
    writers as a new ECG is (no element of it among their last encoded ones)."""
    used = 0.0
    for item in items:
        part10._encoded_value.cache_clear()
        start = time.process_time()
        make(item)
        used += time.process_time() - start
    return used * 1000 / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    card = load_card(CARD)
    algorithm = scoring.algorithm_of(card)
    datasets = [
        make_ecg(fs=500 if i % 2 else 1000, patient_id=f"BENCH-{i:05d}").dataset
        for i in range(args.files)
    ]
    datasets.append(read_dataset(Path(get_testdata_file("waveform_ecg.dcm"))))
    items = [scoring.prepare(dataset, card) for dataset in datasets]
    score = scoring.Score(61.23, 42.0)
    result = pdf.PageResult(61.23, 42.0, 19.23, ())
    sr.prepare(algorithm, sr.SRClass.COMPREHENSIVE)
    cases: dict[str, Callable[[scoring.Scorable], object]] = {
        "quality gate": lambda item: quality.assess(item.ecg),
        "SR (fast path)": lambda item: build_outputs(item, score, algorithm, ["sr"]),
        "PDF page": lambda item: pdf.render_page(
            item.header, item.standard_signal, item.ecg.leads_derived, result, algorithm
        ),
        "Encapsulated PDF instance": lambda item: build_outputs(item, score, algorithm, ["pdf"]),
        "SR + PDF of one ECG": lambda item: build_outputs(item, score, algorithm, ["sr", "pdf"]),
        "Secondary Capture instance": lambda item: build_outputs(item, score, algorithm, ["sc"]),
    }
    print(f"{len(items)} ECGs, {args.runs} runs; CPU ms per ECG, median (worst run)")
    for name, make in cases.items():
        make(items[0])  # first call: font and filter set-up
        runs = [cpu_ms(make, items) for _ in range(args.runs)]
        print(f"  {name:<28}{statistics.median(runs):7.2f} ({max(runs):.2f})")
    print("target: PDF <= 25 ms CPU (median)")


if __name__ == "__main__":
    main()
