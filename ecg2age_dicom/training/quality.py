"""Pass and flag rates of the signal-quality gate on the shared data sets.

Run: ``python -m ecg2age_dicom.training.quality [--data ../shared/data] [--test]``. Prints, per
data set, how many ECGs the gate passes (scored, flagged or not), refuses (with the reasons
counted) and flags (each flag counted). The thresholds in :mod:`ecg2age_dicom.quality` were
chosen on PTB-XL folds 1-8 (at least 99 % must pass); ``--test`` adds folds 9-10, for the
final report only.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

from ecg2age_dicom import quality
from ecg2age_dicom.training.data import Records, as_ecg, load_code15, load_ptbxl, load_ptbxl500

DEVELOPMENT_FOLDS = (1, 2, 3, 4, 5, 6, 7, 8)
TEST_FOLDS = (9, 10)


def rates(records: Records) -> tuple[int, int, Counter[str], Counter[str]]:
    """(passed, passed with a flag, refusal reasons, flags) over ``records``; numbers in
    reasons are dropped so that alike reasons count together."""
    passed, with_flags, refused, flagged = 0, 0, Counter[str](), Counter[str]()
    for index, signal in enumerate(records.signals):
        if records.lengths is not None:
            signal = signal[: records.lengths[index]]
        try:
            result = quality.assess(as_ecg(signal, records.fs))
        except quality.UnfitECG as exc:
            refused[re.sub(r"[\d.]+", "#", exc.reason)] += 1
            continue
        passed += 1
        with_flags += bool(result.flags)
        flagged.update({flag.split(":")[0] for flag in result.flags})
    return passed, with_flags, refused, flagged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--test", action="store_true", help="also PTB-XL folds 9-10")
    args = parser.parse_args()
    sets = {
        "PTB-XL folds 1-8 (100 Hz)": lambda: load_ptbxl(args.data, DEVELOPMENT_FOLDS),
        "PTB-XL 500 Hz extras": lambda: load_ptbxl500(args.data, tuple(range(1, 11))),
        "CODE-15% (400 Hz)": lambda: load_code15(args.data),
    }
    if args.test:
        sets["PTB-XL folds 9-10 (100 Hz)"] = lambda: load_ptbxl(args.data, TEST_FOLDS)
    print("| data set | ECGs | passed | flagged (any) | refused: reasons | flags |")
    print("|---|---|---|---|---|---|")
    for name, load in sets.items():
        records = load()
        total = len(records.signals)
        passed, with_flags, refused, flagged = rates(records)
        reasons = "; ".join(f"{n} x {r}" for r, n in refused.most_common(4)) or "none"
        flags = ", ".join(f"{f} {100 * n / total:.1f} %" for f, n in flagged.most_common())
        print(
            f"| {name} | {total} | {100 * passed / total:.2f} % | "
            f"{100 * with_flags / total:.1f} % | {reasons} | {flags or 'none'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
