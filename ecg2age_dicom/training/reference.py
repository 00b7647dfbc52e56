"""The reference set that ships with the project: 200 real ECGs with known ages.

Run: ``python -m ecg2age_dicom.training.reference [--data ../shared/data] [--out FILE]``.
It draws, with a fixed seed, 100 records from each PTB-XL test fold (9 and 10: never used
for training, tuning or thresholds) and writes them as the shared data stores them (int16
first differences at 100 Hz, 1 unit = 1 µV; ``ecg_id``, ``age``, ``fold``) into
``model_zoo/reference/ptbxl-test-200.npz`` (about 2 MB; PTB-XL, CC BY 4.0: provenance and
attribution in ``model_zoo/reference/README.md``). :func:`~ecg2age_dicom.training.data.
load_reference` reads it back. The same data and seed give the same file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ecg2age_dicom.training.data import REFERENCE_SET, TEST_FOLDS, load_ptbxl

PER_FOLD = 100
SEED = 20261202


def build(data_dir: Path, out: Path) -> int:
    """Write the reference set from ``data_dir`` into ``out``; returns how many records."""
    rng = np.random.default_rng(SEED)
    parts: dict[str, list[np.ndarray]] = {"signals": [], "ecg_id": [], "age": [], "fold": []}
    for fold in TEST_FOLDS:
        records = load_ptbxl(data_dir, (fold,))
        chosen = np.sort(rng.choice(len(records.ids), size=PER_FOLD, replace=False))
        parts["signals"].append(records.signals[chosen])
        parts["ecg_id"].append(records.ids[chosen])
        parts["age"].append(records.ages[chosen])
        parts["fold"].append(np.full(PER_FOLD, fold, np.int8))
    signals = np.concatenate(parts["signals"]).astype(np.int16)
    delta = np.diff(signals, axis=1, prepend=np.zeros_like(signals[:, :1]))  # int16 wraps back
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        signals_delta=delta.astype(np.int16),
        ecg_id=np.concatenate(parts["ecg_id"]).astype(np.int32),
        age=np.concatenate(parts["age"]).astype(np.float32),
        fold=np.concatenate(parts["fold"]),
    )
    return len(signals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=REFERENCE_SET)
    args = parser.parse_args()
    count = build(args.data, args.out)
    print(f"{count} records -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
