"""Fit a model's age-gap correction on validation data, write it into its card, and test it.

Run: ``python -m ecg2age_dicom.training.age_gap [--card CARD] [--data ../shared/data]
[--folds 5 6 7 8] [--method quadratic] [--write] [--test]``. Predicts the PTB-XL records of
``--folds`` (validation data: folds the model was not trained on; the default model v1 was
trained on 1-4 and stopped early on 5) through the serving path
(:func:`~ecg2age_dicom.training.evaluate.predict_records`). It prints, for each method, a
leave-one-fold-out check on those folds (fitted on the others: |Pearson r| of the corrected
gap with age, and the worst age quintile's median corrected gap), so that the method is
chosen on validation data; then fits ``--method`` on all of them
(:func:`~ecg2age_dicom.age.fit_gap_correction`) and prints the card's ``[age_gap]`` table;
``--write`` puts it into the card (before its ``[metrics.*]`` tables). ``--test`` then reports,
on the test folds 9-10 only, Pearson r of the gap and of the corrected gap with age and the
median of each per age quintile (targets: |r| <= 0.1, every quintile within +-2.5 years).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from ecg2age_dicom.age import METHODS, GapCorrection, fit_gap_correction
from ecg2age_dicom.config import ModelSettings
from ecg2age_dicom.model import ModelRuntime
from ecg2age_dicom.training import data
from ecg2age_dicom.training.evaluate import predict_records

VALIDATION_FOLDS = (5, 6, 7, 8)


def card_table(correction: GapCorrection) -> str:
    """The ``[age_gap]`` table of a card."""
    return (
        "[age_gap]\n"
        "# the gap expected at an age, by power of age: python -m ecg2age_dicom.training.age_gap\n"
        f'method = "{correction.method}"\n'
        f"coefficients = {list(correction.coefficients)}\n"
        f'fitted_on = "{correction.fitted_on}"\n'
    )


def write_age_gap(card_path: Path, correction: GapCorrection) -> None:
    """Replace or add the card's ``[age_gap]`` table, before its ``[metrics.*]`` tables."""
    text = Path(card_path).read_text(encoding="utf-8")
    text = re.sub(r"(?ms)^\[age_gap\]\n.*?(?=^\[|\Z)", "", text)
    head, marker, tail = text.partition("\n[metrics.")
    text = head.rstrip() + "\n\n" + card_table(correction) + (marker + tail if marker else "")
    Path(card_path).write_text(text, encoding="utf-8")


def quintile_medians(ages: np.ndarray, values: np.ndarray) -> list[tuple[float, float, float]]:
    """(lowest age, highest age, median value) in each fifth of the records by age."""
    order = np.argsort(ages, kind="stable")
    return [
        (float(ages[part].min()), float(ages[part].max()), float(np.median(values[part])))
        for part in np.array_split(order, 5)
    ]


def corrected_gaps(
    correction: GapCorrection, ages: np.ndarray, predicted: np.ndarray
) -> np.ndarray:
    return np.array([correction.corrected_gap(p, a) for p, a in zip(predicted, ages, strict=True)])


def cross_validated(
    ages: np.ndarray, predicted: np.ndarray, folds: np.ndarray, method: str
) -> tuple[float, float]:
    """(largest |r|, largest |quintile median|) of the corrected gap over the folds, each
    corrected by the fit on the other folds."""
    worst_r, worst_median = 0.0, 0.0
    for fold in np.unique(folds):
        fit = folds != fold
        correction = fit_gap_correction(predicted[fit], ages[fit], method, "")
        held = ~fit
        corrected = corrected_gaps(correction, ages[held], predicted[held])
        worst_r = max(worst_r, abs(float(np.corrcoef(corrected, ages[held])[0, 1])))
        medians = [abs(m) for _, _, m in quintile_medians(ages[held], corrected)]
        worst_median = max(worst_median, *medians)
    return worst_r, worst_median


def report(ages: np.ndarray, predicted: np.ndarray, correction: GapCorrection) -> list[str]:
    """Lines that compare the gap and the corrected gap with age on a test set."""
    gaps = predicted - ages
    corrected = corrected_gaps(correction, ages, predicted)
    lines = [
        f"n = {ages.size}; Pearson r with age: gap {np.corrcoef(gaps, ages)[0, 1]:+.3f}, "
        f"corrected gap {np.corrcoef(corrected, ages)[0, 1]:+.3f} (target |r| <= 0.1)",
        "age quintile    median gap   median corrected gap (target within +-2.5 y)",
    ]
    for (low, high, gap), (_, _, fixed) in zip(
        quintile_medians(ages, gaps), quintile_medians(ages, corrected), strict=True
    ):
        lines.append(f"{low:5.0f}-{high:<5.0f}    {gap:+8.2f}     {fixed:+8.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card", type=Path, default=ModelSettings().card)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--folds", type=int, nargs="+", default=list(VALIDATION_FOLDS))
    parser.add_argument("--method", choices=sorted(METHODS), default="quadratic")
    parser.add_argument("--write", action="store_true", help="write [age_gap] into the card")
    parser.add_argument("--test", action="store_true", help="report on test folds 9-10")
    args = parser.parse_args()
    if set(args.folds) & set(data.TEST_FOLDS):
        parser.error("the test folds 9-10 are for the final report only, not for fitting")
    runtime = ModelRuntime.load(args.card)
    folds = tuple(args.folds)
    ages, predicted, labels = [], [], []
    for fold in folds:
        records = data.load_ptbxl(args.data, (fold,))
        ages.append(records.ages)
        predicted.append(predict_records(runtime, records.signals, records.fs))
        labels.append(np.full(records.ages.size, fold))
    validation_ages, validation_predicted = np.concatenate(ages), np.concatenate(predicted)
    print(f"leave-one-fold-out over PTB-XL folds {list(folds)} (validation):")
    for method in METHODS:
        r, median = cross_validated(
            validation_ages, validation_predicted, np.concatenate(labels), method
        )
        print(f"  {method:<10} largest |r| {r:.3f}, worst quintile median {median:.2f} y")
    names = ", ".join(str(fold) for fold in folds)
    fitted_on = f"PTB-XL folds {names} (n={validation_ages.size})"
    correction = fit_gap_correction(validation_predicted, validation_ages, args.method, fitted_on)
    print("\n" + card_table(correction))
    if args.write:
        write_age_gap(args.card, correction)
        print(f"written into {args.card}")
    if args.test:
        test = data.load_ptbxl(args.data, data.TEST_FOLDS)
        print("PTB-XL folds 9-10:")
        print(
            "\n".join(
                report(test.ages, predict_records(runtime, test.signals, test.fs), correction)
            )
        )


if __name__ == "__main__":
    main()
