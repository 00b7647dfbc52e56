"""The one scoring path: the pipeline, ``predict`` and ``model evaluate`` all go through it.

    DICOM dataset --prepare--> Scorable (identity, header, quality, model input, chronological age)
    decoded ECG --model_input--> (samples, 12) float32 input the card asks for
    inputs --score--> a Score (or the reason there is none) per ECG, in one model batch

:func:`prepare` refuses what cannot be scored: a SOP class that is not scored or an invalid
UID (:func:`~ecg2age_dicom.identity.check_identity`), a waveform that does not decode
(:func:`~ecg2age_dicom.waveform.decode`), a model input that is not finite, or a recording
the signal-quality gate refuses (:func:`~ecg2age_dicom.quality.assess`, whose flags for what
is doubtful travel with the ECG to its reports and results).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from ecg2age_dicom import quality, sr, waveform
from ecg2age_dicom.age import chronological_age
from ecg2age_dicom.dicomfile import encoded_copy
from ecg2age_dicom.errors import InvalidECG
from ecg2age_dicom.identity import Identity, check_identity
from ecg2age_dicom.model import ModelCard, ModelRuntime

WAVEFORM_SEQUENCE = 0x54000100


@dataclass(frozen=True)
class Scorable:
    """An ECG ready for the model, with what its reports need.

    Attributes
    ----------
    identity:
        Its SOP class and UIDs, checked.
    header:
        The dataset without its Waveform Sequence: patient and study attributes for reports.
    ecg:
        The decoded waveform.
    quality:
        What the signal-quality gate found (its flags: empty when clean).
    model_input:
        (samples, 12) float32 in microvolts, as the card asks.
    standard_signal:
        The standard 10 s at 500 Hz (float32 µV) the PDF page draws: the model input itself
        when the card asks for that.
    chronological_age:
        Years at the recording, when the ECG says.
    """

    identity: Identity
    header: Dataset
    ecg: waveform.ECG
    quality: quality.Quality
    model_input: np.ndarray
    chronological_age: float | None
    standard_signal: np.ndarray


@dataclass(frozen=True)
class Score:
    """One ECG's result, in years with two decimals; the gap is their difference, and the
    corrected gap what the card's correction leaves of it (None without one)."""

    predicted_age_years: float
    chronological_age_years: float | None
    age_gap_corrected_years: float | None = None

    @property
    def age_gap_years(self) -> float | None:
        if self.chronological_age_years is None:
            return None
        return round(self.predicted_age_years - self.chronological_age_years, 2)


def model_input(ecg: waveform.ECG, card: ModelCard) -> np.ndarray:
    """The input ``card`` asks for, from a decoded ECG.

    Raises
    ------
    InvalidECG
        The input holds a value that is not finite.
    """
    values = card.input.model_input(ecg)
    if not np.isfinite(values).all():
        raise InvalidECG("the waveform holds samples that are not finite numbers")
    return values


def prepare(ds: Dataset, card: ModelCard) -> Scorable:
    """Check, decode and turn a DICOM ECG into what the model and the reports need.

    Raises
    ------
    InvalidECG
        Not a scored SOP class, an invalid UID (:class:`~ecg2age_dicom.errors.InvalidIdentity`),
        a waveform that cannot be used, non-finite samples, or a recording not fit to score
        (:class:`~ecg2age_dicom.quality.UnfitECG`).
    """
    identity = check_identity(ds)
    ecg = waveform.decode(ds)
    values = model_input(ecg, card)
    fitness = quality.assess(ecg)
    header = encoded_copy(ds, leave_out=(WAVEFORM_SEQUENCE,))
    standard = card.input.sampling_rate_hz == waveform.STANDARD_HZ and card.input.samples == round(
        waveform.STANDARD_HZ * waveform.STANDARD_SECONDS
    )
    drawn = values if standard else waveform.to_model_input(ecg)
    return Scorable(identity, header, ecg, fitness, values, chronological_age(ds), drawn)


def score(
    runtime: ModelRuntime,
    inputs: Sequence[np.ndarray],
    chronological_ages: Sequence[float | None] | None = None,
) -> list[Score | str]:
    """Predict ``inputs`` in one batch: a :class:`Score` per input, or the reason it has none
    (the model gave a value that is not a finite age)."""
    if not inputs:
        return []
    ages = runtime.predict(np.stack(inputs))
    known = chronological_ages or [None] * len(inputs)
    correction = runtime.card.gap_correction
    results: list[Score | str] = []
    for predicted, chronological in zip(ages, known, strict=True):
        if not np.isfinite(predicted):
            results.append(f"the model gave no finite age ({float(predicted)})")
            continue
        years = round(float(predicted), 2)
        if chronological is None:
            results.append(Score(years, None))
            continue
        age = round(chronological, 2)
        corrected = correction.corrected_gap(years, age) if correction else None
        results.append(Score(years, age, None if corrected is None else round(corrected, 2)))
    return results


def algorithm_of(card: ModelCard) -> sr.AlgorithmDescription:
    """What a report says about the card's model."""
    return sr.AlgorithmDescription(
        card.name,
        card.version,
        card.intended_use,
        card.validated_for_clinical_use,
        card.gap_correction,
    )
