"""The signal-quality gate on synthetic faults (refused, flagged, or, said so, not detected) and
on the real ECGs of the reference set."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ecg2age_dicom import quality
from ecg2age_dicom.quality import UnfitECG, assess
from ecg2age_dicom.training.data import as_ecg, load_reference
from ecg2age_dicom.training.quality import rates
from ecg2age_dicom.waveform import LEADS, decode, derive_limb_leads
from tests.ecg_factory import ecg_signal, make_ecg

LIMB_DERIVED = ("III", "aVR", "aVL", "aVF")


def column(lead: str) -> int:
    return LEADS.index(lead)


def ecg_of(signal: np.ndarray, fs: float = 500.0, derived: bool = False):
    """A decoded ECG; ``derived``: the file held only I, II and V1-V6 (limb leads computed)."""
    ecg = as_ecg(signal, fs)
    if not derived:
        return ecg
    samples = np.array(signal, dtype=np.float32)
    for lead, values in derive_limb_leads(samples[:, 0], samples[:, 1]).items():
        samples[:, column(lead)] = values
    return dataclasses.replace(ecg, samples=samples, leads_derived=LIMB_DERIVED)


@pytest.fixture
def clean() -> np.ndarray:
    return ecg_signal(500, 10.0)


@pytest.mark.parametrize("fs", [100, 250, 400, 500, 1000])
def test_a_clean_recording_passes_without_flags_at_every_rate(fs):
    result = assess(ecg_of(ecg_signal(fs, 10.0), fs))
    assert result.flags == () and 65 < result.heart_rate_bpm < 80 and result.beat_likeness > 0.9


@pytest.mark.parametrize("derived", [False, True])
def test_noise_alone_is_refused(derived):
    noise = np.random.default_rng(3).uniform(-60, 60, (5000, 12))
    with pytest.raises(UnfitECG):
        assess(ecg_of(noise, derived=derived))


def test_noise_with_derived_limb_leads_is_refused_for_its_missing_rhythm():
    noise = np.random.default_rng(4).uniform(-60, 60, (5000, 12))
    with pytest.raises(UnfitECG, match="no QRS rhythm"):
        assess(ecg_of(noise, derived=True))


def test_lead_i_mis_scaled_is_refused_where_iii_is_recorded(clean):
    clean[:, column("I")] *= 12
    with pytest.raises(UnfitECG, match="Einthoven"):
        assess(ecg_of(clean))


def test_lead_ii_mis_scaled_with_derived_limb_leads_is_flagged(clean):
    clean[:, column("II")] *= 12
    assert "limb_leads_out_of_proportion" in assess(ecg_of(clean, derived=True)).flags


def test_lead_i_mis_scaled_with_derived_limb_leads_is_not_detected_here(clean):
    # I x 12 is 8 x II on this heart: within what real axes give (PTB-XL reaches 11.6).
    # Documented in the README as a limit of the gate.
    clean[:, column("I")] *= 12
    assert "limb_leads_out_of_proportion" not in assess(ecg_of(clean, derived=True)).flags


def test_a_precordial_lead_mis_scaled_beyond_any_heart_is_refused(clean):
    clean[:, column("V4")] *= 30
    with pytest.raises(UnfitECG, match="V4 deflects"):
        assess(ecg_of(clean))


def test_one_artefact_spike_is_flagged_not_refused(clean):
    clean[2500:2505, column("V5")] += 20_000
    assert "artefact:V5" in assess(ecg_of(clean)).flags


def test_a_disconnected_precordial_lead_is_flagged(clean):
    clean[:, column("V3")] = np.random.default_rng(5).normal(0, 2, 5000)
    assert "flat_lead:V3" in assess(ecg_of(clean)).flags


@pytest.mark.parametrize("leads", [("I",), ("V1", "V2", "V3")])
def test_a_flat_limb_lead_or_three_flat_leads_are_refused(clean, leads):
    for lead in leads:
        clean[:, column(lead)] = 0.0
    with pytest.raises(UnfitECG, match="flat, disconnected or clipped"):
        assess(ecg_of(clean, derived=True))


def test_a_clipped_lead_is_flagged(clean):
    clean[:, column("V2")] = np.clip(clean[:, column("V2")], -300, 300)
    assert "clipped_lead:V2" in assess(ecg_of(clean)).flags


def test_swapped_arm_electrodes_are_flagged(clean):
    swapped = clean.copy()
    swapped[:, column("I")] = -clean[:, column("I")]
    for a, b in (("II", "III"), ("aVR", "aVL")):
        swapped[:, column(a)], swapped[:, column(b)] = clean[:, column(b)], clean[:, column(a)]
    assert "arm_electrodes_reversed_or_dextrocardia" in assess(ecg_of(swapped)).flags
    assert "arm_electrodes_reversed_or_dextrocardia" not in assess(ecg_of(clean)).flags


PRECORDIAL = [column(f"V{n}") for n in range(1, 7)]


def test_mains_hum_is_flagged_as_high_frequency_noise(clean):
    clean[:, PRECORDIAL] += 150 * np.sin(2 * np.pi * 50 * np.arange(5000) / 500)[:, None]
    flags = assess(ecg_of(clean)).flags
    assert [f for f in flags if f.startswith("high_frequency")] == [
        f"high_frequency_noise:V{n}" for n in range(1, 7)
    ]


def test_baseline_wander_is_flagged(clean):
    clean[:, PRECORDIAL] += 5000 * np.sin(2 * np.pi * 0.15 * np.arange(5000) / 500)[:, None]
    assert "baseline_wander:V1" in assess(ecg_of(clean)).flags


def test_a_heart_rate_out_of_range_is_flagged():
    slow = np.repeat(ecg_signal(500, 10.0), 3, axis=0)[:5000]  # three times slower: 24 / min
    assert "heart_rate_out_of_range" in assess(ecg_of(slow)).flags


def test_derived_leads_are_not_checked_as_recorded():
    ecg = ecg_of(ecg_signal(500, 10.0), derived=True)
    assert quality.recorded_leads(ecg) == ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]


def test_a_file_with_a_constant_lead_decodes_and_the_gate_flags_it(clean):
    clean[:, column("V2")] = 150.0  # electrode off: the cart wrote a constant
    assert assess(decode(make_ecg(signal=clean).dataset)).flags == ("flat_lead:V2",)


def test_real_ecgs_of_the_reference_set_pass_and_few_are_flagged():
    # 200 PTB-XL test-fold records (100 Hz), never used to choose the thresholds
    reference = load_reference()
    passed, flagged, refused, _ = rates(reference)
    assert len(reference.signals) == 200
    assert passed >= 198, refused  # >= 99 %, as on the training folds
    assert flagged <= 10  # <= 5 % (2.4 % on all of folds 9-10)
