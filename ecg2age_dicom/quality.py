"""The signal-quality gate: is a decoded ECG fit to score, and what about it is doubtful?

Every check looks at the leads the file recorded (derived leads repeat I and II), in
microvolts, averaged down to 100-200 Hz (:data:`ANALYSIS_HZ`); clipping and high-frequency
noise are measured at the recording's own rate:

==========================  =====================================  ===========================
check                       measure                                refused / flagged when
==========================  =====================================  ===========================
flat or disconnected lead   standard deviation after a 0.5 Hz      refused: I or II, or 3 or
                            high-pass                              more leads; flagged: 1-2
saturation / clipping       share of samples at the lead's own     as for a flat lead
                            maximum or minimum
amplitude range             deflection after high-pass: 99th       refused over
                            percentile, maximum; I against II      :data:`MAX_AMPLITUDE_UV`;
                                                                   flagged: a briefer artefact,
                                                                   I and II out of proportion
Einthoven consistency       RMS of III - (II - I) and of           refused over
(III, aVR, aVL, aVF         aVR + aVL + aVF, over the RMS of II    :data:`MAX_EINTHOVEN_REFUSED`,
recorded)                                                          flagged over
                                                                   :data:`MAX_EINTHOVEN_FLAGGED`
QRS complexes               beats found on the summed QRS-band     refused: fewer than
                            envelope, their rate, and how alike    :data:`MIN_BEATS` or beats
                            the beats are (correlation with the    unlike each other (pure
                            median beat)                           noise); flagged: rate out of
                                                                   30-200 / min, or doubtful
                                                                   likeness
high-frequency noise        RMS in 40-100 Hz (at 250 Hz or more)   flagged
baseline wander             spread of the signal below 0.5 Hz      flagged
left/right arm reversal     QRS and T of I negative, QRS of aVR    flagged (dextrocardia looks
                            above aVL's                            the same)
==========================  =====================================  ===========================

The thresholds were chosen on PTB-XL folds 1-8 (``python -m ecg2age_dicom.training.quality``
prints the pass and flag rates of every data set; README, "Signal quality").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import butter, find_peaks, sosfilt, sosfilt_zi, sosfreqz

from ecg2age_dicom.errors import InvalidECG
from ecg2age_dicom.waveform import ECG, LEADS, derive_limb_leads

FLAT_STD_UV = 10.0
"""A lead whose standard deviation (after high-pass) is under this is flat."""
SATURATED_SHARE = 0.02
"""A lead with this share of its samples at its own extreme value is clipped."""
MAX_AMPLITUDE_UV = 12_000.0
"""No resting ECG deflects 12 mV: a lead beyond for 1 % of the time is mis-scaled; a briefer
excursion is an artefact (flagged)."""
MAX_LIMB_PROPORTION = 8.5
"""I and II differ this much (99th percentile) in 0.1 % of PTB-XL: one may be mis-scaled."""
MAX_EINTHOVEN_FLAGGED = 0.1
MAX_EINTHOVEN_REFUSED = 0.5
"""Residual of Einthoven's and Goldberger's laws, over the RMS of lead II."""
MIN_BEATS = 3
MIN_BEAT_LIKENESS_REFUSED = 0.5
MIN_BEAT_LIKENESS_FLAGGED = 0.8
"""Median correlation of each beat with the median beat (noise: near 0; clean ECG: >0.9)."""
RATE_RANGE_BPM = (30.0, 200.0)
HF_BAND_HZ = (40.0, 100.0)
MIN_HF_RATE_HZ = 250.0  # a 40-100 Hz band needs it (PTB-XL's 100 Hz files hold none)
MAX_HF_NOISE_UV = 75.0  # 99th percentile of PTB-XL's 500 Hz records of folds 1-8
MAX_BASELINE_WANDER_UV = 4000.0
LIMB_LEADS_NEEDED = ("I", "II")  # every limb lead derives from them
MAX_BAD_LEADS_FLAGGED = 2


class UnfitECG(InvalidECG):
    """The recording decodes but is not fit to score (noise, flat or mis-scaled leads...)."""


@dataclass(frozen=True)
class Quality:
    """What the gate measured on one ECG, and the flags of what is doubtful (empty: clean)."""

    flags: tuple[str, ...]
    heart_rate_bpm: float
    beat_likeness: float


ANALYSIS_HZ = 100.0
"""Most checks run on the recording averaged down to 100-200 Hz (an integer factor): the rate
the thresholds were chosen at, and 5-10 times less work at 500-1000 Hz."""


@lru_cache(maxsize=32)
def _design(kind: str, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Second-order sections of one filter and their steady state for a unit input:
    ``highpass`` 0.5 Hz, ``qrs`` 5-15 Hz band."""
    if kind == "highpass":
        sos = butter(2, 0.5, "highpass", fs=fs, output="sos")
    else:
        sos = butter(2, (5.0, min(15.0, 0.45 * fs)), "bandpass", fs=fs, output="sos")
    return sos, sosfilt_zi(sos)


@lru_cache(maxsize=32)
def _high_band(fs: float, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """For the rfft of ``n_samples``: the weight of each bin's real and imaginary part in
    the mean square of a 4th-order Butterworth :data:`HF_BAND_HZ` band-pass (its |H|^2,
    doubled for the bins that also stand for a negative frequency, over ``n_samples**2``:
    Parseval), and the spectrum of a ramp from 0 to 1 over the recording."""
    sos = butter(4, HF_BAND_HZ, "bandpass", fs=fs, output="sos")
    _, response = sosfreqz(sos, worN=np.fft.rfftfreq(n_samples, 1.0 / fs), fs=fs)
    gain = np.abs(response) ** 2 * 2.0
    gain[0] /= 2.0
    if n_samples % 2 == 0:
        gain[-1] /= 2.0
    ramp = np.fft.rfft(np.linspace(0.0, 1.0, n_samples))
    return np.repeat(gain / n_samples**2, 2), ramp


def _band_rms(by_lead: np.ndarray, fs: float) -> np.ndarray:
    """RMS of each lead in :data:`HF_BAND_HZ` (lead, time), through the filter's response on
    the spectrum: the steady state of filtering in time, at a third of the cost. The line
    joining each lead's first and last sample is taken off first: the spectrum treats the
    recording as periodic, and the jump from its end back to its start would leak into the
    band (the constant part falls outside the band)."""
    weights, ramp = _high_band(fs, by_lead.shape[1])
    spectrum = np.fft.rfft(by_lead, axis=1)
    spectrum -= (by_lead[:, -1] - by_lead[:, 0])[:, None] * ramp
    parts = spectrum.view(np.float64)  # real and imaginary parts, side by side
    return np.sqrt((parts * parts) @ weights)


def _filtered(kind: str, fs: float, by_lead: np.ndarray) -> np.ndarray:
    """One causal pass along time, started in the steady state of each lead's first sample
    (no step at the start). The phase shift is the same on every lead, and no check here
    compares a lead with its own timing."""
    sos, zi = _design(kind, fs)
    start = zi[:, None, :] * by_lead[:, 0][None, :, None]
    return sosfilt(sos, by_lead, axis=-1, zi=start)[0]


def _averaged_down(by_lead: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
    """Means of ``factor`` consecutive samples (a boxcar anti-alias), and the new rate."""
    factor = max(1, int(fs // ANALYSIS_HZ))
    usable = by_lead.shape[1] - by_lead.shape[1] % factor
    # A product with the averaging weights: ten times faster than .mean over a short axis.
    weights = np.full(factor, 1.0 / factor)
    return by_lead[:, :usable].reshape(len(by_lead), -1, factor) @ weights, fs / factor


def recorded_leads(ecg: ECG) -> list[str]:
    """The leads the file itself held (not derived from I and II)."""
    return [lead for lead in LEADS if lead in ecg.leads_found and lead not in ecg.leads_derived]


def assess(ecg: ECG) -> Quality:
    """Check a decoded ECG before it is scored.

    Raises
    ------
    UnfitECG
        With the reason: not an ECG that can be scored.
    """
    names = recorded_leads(ecg)
    # (lead, time), contiguous: scipy filters the last axis fastest.
    by_lead = np.ascontiguousarray(ecg.samples.T[[LEADS.index(lead) for lead in names]], float)
    slow, fs = _averaged_down(by_lead, ecg.sampling_frequency)
    ac = _filtered("highpass", fs, slow)
    settled = ac[:, round(fs) :]  # after the high-pass's first second
    flags: list[str] = []

    spread = settled.std(axis=1)
    at_extreme = (by_lead == by_lead.max(axis=1, keepdims=True)) | (
        by_lead == by_lead.min(axis=1, keepdims=True)
    )
    saturated = at_extreme.mean(axis=1) >= SATURATED_SHARE
    flat = spread < FLAT_STD_UV
    bad = [name for name, is_bad in zip(names, flat | saturated, strict=True) if is_bad]
    if any(lead in bad for lead in LIMB_LEADS_NEEDED) or len(bad) > MAX_BAD_LEADS_FLAGGED:
        raise UnfitECG(f"flat, disconnected or clipped lead(s): {', '.join(bad)}")
    flags += [f"flat_lead:{n}" for n, f in zip(names, flat, strict=True) if f]
    flags += [f"clipped_lead:{n}" for n, c in zip(names, saturated & ~flat, strict=True) if c]

    magnitude = np.abs(settled)
    typical = np.percentile(magnitude, 99, axis=1)  # a whole lead, not one artefact
    if (typical > MAX_AMPLITUDE_UV).any():
        worst = names[int(np.argmax(typical))]
        raise UnfitECG(
            f"lead {worst} deflects {typical.max() / 1000:.1f} mV for 1 % of the time: over "
            f"{MAX_AMPLITUDE_UV / 1000:g} mV, the channel is mis-scaled"
        )
    peaks = magnitude.max(axis=1)
    flags += [f"artefact:{n}" for n, v in zip(names, peaks, strict=True) if v > MAX_AMPLITUDE_UV]
    limb = dict(zip(names, typical, strict=True))
    proportion = max(limb["I"], limb["II"]) / (min(limb["I"], limb["II"]) + 1e-9)
    if proportion > MAX_LIMB_PROPORTION:
        flags.append("limb_leads_out_of_proportion")

    leads = dict(zip(names, settled, strict=True))
    flags += _einthoven(leads)
    good = [i for i, name in enumerate(names) if name not in bad]
    band = _filtered("qrs", fs, ac[good])[:, round(fs) :]
    beats, rate, likeness = _beats(band, fs)
    if len(beats) < MIN_BEATS or likeness < MIN_BEAT_LIKENESS_REFUSED:
        raise UnfitECG(
            f"no QRS rhythm found ({len(beats)} beat(s), beats alike {likeness:.2f}): noise "
            "or not an ECG"
        )
    if likeness < MIN_BEAT_LIKENESS_FLAGGED:
        flags.append("irregular_beats")
    if not RATE_RANGE_BPM[0] <= rate <= RATE_RANGE_BPM[1]:
        flags.append("heart_rate_out_of_range")

    full_rate = ecg.sampling_frequency
    if full_rate >= MIN_HF_RATE_HZ:
        noise = _band_rms(by_lead[:, round(full_rate) :], full_rate)
        flags += [
            f"high_frequency_noise:{n}"
            for n, v in zip(names, noise, strict=True)
            if v > MAX_HF_NOISE_UV
        ]
    wander = np.ptp((slow - ac)[:, round(fs) :], axis=1)  # what the high-pass took away
    flags += [
        f"baseline_wander:{n}"
        for n, v in zip(names, wander, strict=True)
        if v > MAX_BASELINE_WANDER_UV
    ]
    if _arms_reversed(leads["I"], leads["II"], beats, fs):
        flags.append("arm_electrodes_reversed_or_dextrocardia")
    return Quality(tuple(flags), round(rate, 1), round(likeness, 3))


def _einthoven(leads: dict[str, np.ndarray]) -> list[str]:
    """Flags for Einthoven's (III = II - I) and Goldberger's (aVR + aVL + aVF = 0) laws."""
    if "II" not in leads:
        return []
    scale = float(leads["II"].std()) + 1e-9
    residuals = {}
    if {"I", "III"} <= leads.keys():
        residuals["einthoven"] = leads["III"] - (leads["II"] - leads["I"])
    if {"aVR", "aVL", "aVF"} <= leads.keys():
        residuals["goldberger"] = leads["aVR"] + leads["aVL"] + leads["aVF"]
    flags = []
    for law, residual in residuals.items():
        ratio = float(residual.std()) / scale
        if ratio > MAX_EINTHOVEN_REFUSED:
            raise UnfitECG(
                f"the limb leads contradict {law.capitalize()}'s law (residual {ratio:.0%} of "
                "lead II): a lead is mis-scaled or mislabelled"
            )
        if ratio > MAX_EINTHOVEN_FLAGGED:
            flags.append(f"{law}_inconsistent")
    return flags


def _beats(band: np.ndarray, fs: float) -> tuple[np.ndarray, float, float]:
    """QRS positions, heart rate (per minute) and beat likeness in the QRS-band leads
    (lead, time)."""
    window = max(1, round(0.08 * fs))
    envelope = np.convolve(np.abs(band).sum(axis=0), np.ones(window) / window, mode="same")
    peaks, _ = find_peaks(
        envelope, distance=max(1, round(0.3 * fs)), height=0.35 * np.percentile(envelope, 99)
    )
    half = round(0.1 * fs)
    peaks = peaks[(peaks >= half) & (peaks < envelope.size - half)]
    if len(peaks) < 2:
        return peaks, 0.0, 0.0
    rate = 60.0 * fs / float(np.median(np.diff(peaks)))
    windows = np.stack([band[:, p - half : p + half].ravel() for p in peaks])
    windows -= windows.mean(axis=1, keepdims=True)
    template = np.median(windows, axis=0)
    norms = np.linalg.norm(windows, axis=1) * np.linalg.norm(template) + 1e-12
    return peaks, rate, float(np.median(windows @ template / norms))


def _arms_reversed(lead_i: np.ndarray, lead_ii: np.ndarray, beats: np.ndarray, fs: float) -> bool:
    """Lead I upside down (QRS and T pointing down) and aVR's QRS above aVL's: the arm
    electrodes are swapped, or the heart is on the right. aVR and aVL from I and II."""
    if len(beats) == 0:
        return False

    def around(centres: np.ndarray, start_s: float, stop_s: float) -> np.ndarray:
        offsets = np.arange(round(start_s * fs), round(stop_s * fs))
        return np.clip(centres[:, None] + offsets[None, :], 0, lead_i.size - 1)

    # The QRS band lags the high-passed leads by its group delay: find each R before its peak.
    search = around(beats, -0.12, 0.04)
    strength = (np.abs(lead_i) + np.abs(lead_ii))[search]
    r_waves = search[np.arange(len(beats)), np.argmax(strength, axis=1)]
    qrs, t_wave = around(r_waves, -0.06, 0.06), around(r_waves, 0.15, 0.35)
    limb = {"I": lead_i, **derive_limb_leads(lead_i, lead_ii)}

    def net(lead: str) -> float:  # tallest upward plus deepest downward deflection, per beat
        parts = limb[lead][qrs]
        return float(np.median(parts.max(axis=1) + parts.min(axis=1)))

    t_wave_i = float(np.median(lead_i[t_wave].mean(axis=1)))
    return net("I") < 0 and t_wave_i < 0 and net("aVR") > net("aVL")
