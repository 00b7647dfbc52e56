"""Evaluate a model through the serving path and write its metrics and plots next to its card.

Each record becomes an :class:`~ecg2age_dicom.waveform.ECG` at its own rate, then goes
through the service's scoring path: :func:`~ecg2age_dicom.scoring.model_input` (the card's
input: resampling to 500 Hz, 10 s length policy) and :func:`~ecg2age_dicom.scoring.score`
(the card's normalisation and output transform, the exported model file). Test sets:
PTB-XL folds 9-10 (100 Hz), CODE-15% (400 Hz, records
of 5 s or more, as the service accepts), and the native-500 Hz PTB-XL records of folds 9-10
compared with the 100 Hz copies of the same ECGs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr

from ecg2age_dicom import scoring
from ecg2age_dicom.errors import ModelError
from ecg2age_dicom.model import Metrics, ModelRuntime
from ecg2age_dicom.training import data
from ecg2age_dicom.waveform import MIN_DURATION_S

log = logging.getLogger(__name__)


def metrics(true_ages: np.ndarray, predicted: np.ndarray) -> Metrics:
    """n, MAE, RMSE, R^2 and Pearson r of predicted against true ages."""
    true_ages, predicted = np.asarray(true_ages, float), np.asarray(predicted, float)
    residual = predicted - true_ages
    total = np.sum((true_ages - true_ages.mean()) ** 2)
    return Metrics(
        n=int(true_ages.size),
        mae=round(float(np.mean(np.abs(residual))), 3),
        rmse=round(float(np.sqrt(np.mean(residual**2))), 3),
        r2=round(float(1 - np.sum(residual**2) / total), 4),
        pearson_r=round(float(pearsonr(true_ages, predicted).statistic), 4),
    )


def input_batches(
    runtime: ModelRuntime, signals: list[np.ndarray] | np.ndarray, fs: float, batch: int
) -> Iterator[list[np.ndarray]]:
    """The card's model inputs for raw microvolt records at ``fs``, ``batch`` at a time."""
    for start in range(0, len(signals), batch):
        chunk = signals[start : start + batch]
        yield [scoring.model_input(data.as_ecg(signal, fs), runtime.card) for signal in chunk]


def predict_records(
    runtime: ModelRuntime, signals: list[np.ndarray] | np.ndarray, fs: float, batch: int = 64
) -> np.ndarray:
    """Ages predicted for raw microvolt records through the serving path.

    Raises
    ------
    ModelError
        The model gave no finite age for a record.
    """
    ages: list[float] = []
    for inputs in input_batches(runtime, signals, fs, batch):
        for result in scoring.score(runtime, inputs):
            if isinstance(result, str):
                raise ModelError(result)
            ages.append(result.predicted_age_years)
    return np.asarray(ages)


@dataclass(frozen=True)
class Evaluation:
    """Metrics per test set, plus the 100 Hz vs native 500 Hz comparison."""

    results: dict[str, Metrics]
    sampling_rate_agreement: dict[str, float]


def evaluate(runtime: ModelRuntime, data_dir: Path, plots_dir: Path | None = None) -> Evaluation:
    """Run every test set; draw the calibration and error-by-age plots for PTB-XL folds 9-10."""
    test = data.load_ptbxl(data_dir, data.TEST_FOLDS)
    test_predicted = predict_records(runtime, test.signals, test.fs)
    results = {"ptbxl_test": metrics(test.ages, test_predicted)}
    log.info("ptbxl_test %s", results["ptbxl_test"])

    code15 = data.load_code15(data_dir)
    assert code15.lengths is not None
    keep = code15.lengths >= MIN_DURATION_S * code15.fs
    code15_signals = [
        s[:n] for s, n, k in zip(code15.signals, code15.lengths, keep, strict=True) if k
    ]
    results["code15"] = metrics(
        code15.ages[keep], predict_records(runtime, code15_signals, code15.fs)
    )
    log.info(
        "code15 %s (of %d records, %d shorter than 5 s left out)",
        results["code15"],
        keep.size,
        int((~keep).sum()),
    )

    native = data.load_ptbxl500(data_dir, data.TEST_FOLDS)
    at_500 = predict_records(runtime, native.signals, native.fs)
    index = {ecg_id: i for i, ecg_id in enumerate(test.ids)}
    at_100 = np.array([test_predicted[index[ecg_id]] for ecg_id in native.ids])
    results["ptbxl500_native_500hz"] = metrics(native.ages, at_500)
    results["ptbxl500_same_ecgs_100hz"] = metrics(native.ages, at_100)
    agreement = {
        "n": float(native.ids.size),
        "mean_abs_difference_years": round(float(np.mean(np.abs(at_500 - at_100))), 3),
        "pearson_r": round(float(pearsonr(at_500, at_100).statistic), 4),
    }
    log.info("500 Hz vs 100 Hz on the same ECGs %s", agreement)
    if plots_dir is not None:
        draw_plots(test.ages, test_predicted, plots_dir, runtime.card.name)
    return Evaluation(results, agreement)


def draw_plots(true_ages: np.ndarray, predicted: np.ndarray, folder: Path, name: str) -> None:
    """calibration.png (predicted vs true, identity, binned means) and error_by_age.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.arange(0, 100, 10)
    centres, means = [], []
    for low in edges:
        inside = (true_ages >= low) & (true_ages < low + 10)
        if inside.sum() >= 5:
            centres.append(true_ages[inside].mean())
            means.append(predicted[inside].mean())
    figure, axes = plt.subplots(figsize=(5.5, 5.5))
    axes.scatter(true_ages, predicted, s=4, alpha=0.25, label="ECG")
    axes.plot([0, 100], [0, 100], "k--", lw=1, label="identity")
    axes.plot(centres, means, "o-", color="C3", label="mean per 10-year bin")
    axes.set(
        xlabel="chronological age (years)",
        ylabel="ECG-predicted age (years)",
        title=f"{name}: PTB-XL folds 9-10 (n={true_ages.size})",
        xlim=(0, 100),
        ylim=(0, 100),
    )
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(folder / "calibration.png", dpi=110)
    plt.close(figure)

    deciles = np.quantile(true_ages, np.linspace(0, 1, 11))
    groups = np.clip(np.searchsorted(deciles, true_ages, side="right") - 1, 0, 9)
    residuals = [predicted[groups == g] - true_ages[groups == g] for g in range(10)]
    labels = [f"{deciles[g]:.0f}-{deciles[g + 1]:.0f}" for g in range(10)]
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    axes.boxplot(residuals, showfliers=False)
    axes.set_xticks(range(1, 11), labels, rotation=30)
    axes.axhline(0, color="k", lw=1, ls="--")
    axes.set(
        xlabel="chronological age decile (years)",
        ylabel="predicted - chronological (years)",
        title=f"{name}: error by age, PTB-XL folds 9-10",
    )
    figure.tight_layout()
    figure.savefig(folder / "error_by_age.png", dpi=110)
    plt.close(figure)


def write_metrics(card_path: Path, results: dict[str, Metrics]) -> None:
    """Replace the card's ``[metrics.*]`` tables (always kept at the end) with ``results``."""
    text = Path(card_path).read_text(encoding="utf-8")
    head = re.split(r"(?m)^\[metrics\.", text, maxsplit=1)[0].rstrip() + "\n"
    tables = []
    for name, values in results.items():
        rows = "\n".join(
            f"{key} = {json.dumps(value)}" if isinstance(value, str) else f"{key} = {value}"
            for key, value in values.model_dump(exclude_none=True).items()
        )
        tables.append(f"[metrics.{name}]\n{rows}\n")
    Path(card_path).write_text(head + "\n" + "\n".join(tables), encoding="utf-8")
