"""Is a card's output transform right? Checked on real ECGs with known ages, not guessed.

A model's raw output becomes years as ``raw x scale + offset`` (``[output]``). A file dropped
in with the wrong transform gives ages that are consistently off (a z-scored output read as
years says "0.3 years"), so ``model verify`` predicts the shipped reference set
(:func:`~ecg2age_dicom.training.data.load_reference`) and :func:`check_transforms` compares,
for the card's transform and the known candidates (identity; ml4h's de-normalisation
x 20.7367 + 54.4974, from its deployment script), the mean, spread, Pearson r and mean
absolute error against the true ages. Pearson r does not depend on the transform: it says
whether the model reads ECGs at all; the mean and the error say which transform fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CANDIDATES = {
    "identity": (1.0, 0.0),
    "ml4h de-normalisation": (20.7367, 54.4974),
}
MAX_MEAN_OFFSET_YEARS = 15.0
MAX_MAE_YEARS = 20.0


@dataclass(frozen=True)
class TransformCheck:
    """One transform's ages on the reference set, against the true ages."""

    name: str
    scale: float
    offset: float
    mean_years: float
    sd_years: float
    pearson_r: float
    mae_years: float
    bias_years: float  # mean predicted - mean true

    @property
    def plausible(self) -> bool:
        """Ages centred near the true ones: within 15 years on average, MAE <= 20 years."""
        return self.mae_years <= MAX_MAE_YEARS and abs(self.bias_years) <= MAX_MEAN_OFFSET_YEARS


def check_transforms(
    raw: np.ndarray, ages: np.ndarray, card_scale: float, card_offset: float
) -> list[TransformCheck]:
    """The card's transform first, then each candidate, applied to the raw outputs ``raw``
    of the reference ECGs whose true ages are ``ages``."""
    raw = np.asarray(raw, dtype=np.float64)
    ages = np.asarray(ages, dtype=np.float64)
    transforms = {"card": (card_scale, card_offset), **CANDIDATES}
    checks = []
    for name, (scale, offset) in transforms.items():
        years = raw * scale + offset
        spread = float(years.std())
        r = float(np.corrcoef(years, ages)[0, 1]) if spread > 0 else float("nan")
        checks.append(
            TransformCheck(
                name=name,
                scale=scale,
                offset=offset,
                mean_years=float(years.mean()),
                sd_years=spread,
                pearson_r=r,
                mae_years=float(np.abs(years - ages).mean()),
                bias_years=float(years.mean() - ages.mean()),
            )
        )
    return checks
