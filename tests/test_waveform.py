"""Decoding and resampling of ECG waveforms (ecg2age_dicom.waveform)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from scipy.signal import resample_poly

from ecg2age_dicom import waveform
from ecg2age_dicom.errors import InvalidECG
from ecg2age_dicom.waveform import LEADS, decode, derive_limb_leads, resample, to_model_input
from tests.ecg_factory import (
    AMBULATORY_ECG,
    GENERAL_32BIT_ECG,
    GENERAL_ECG,
    TRANSFER_SYNTAXES,
    TWELVE_LEAD,
    make_ecg,
    sinusoid_signal,
)

EIGHT_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def assert_decodes_to_truth(built, ecg=None) -> None:
    ecg = ecg or decode(built.dataset)
    assert ecg.samples.dtype == np.float32
    assert ecg.samples.shape == built.truth_uv.shape
    # Quantisation to the least significant bit is the only loss allowed.
    np.testing.assert_allclose(ecg.samples, built.truth_uv, atol=built.lsb_uv / 2 + 1e-3)


# -- pydicom's real sample (Mortara ELI 250, 1000 Hz, 10 s, SCP-ECG codes) -----------------


@pytest.fixture(scope="module")
def sample():
    return pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))


def test_real_sample_values_and_group_choice(sample):
    ecg = decode(sample)
    assert ecg.group_label == "RHYTHM"  # not the 1.2 s MEDIAN BEAT group
    assert ecg.sampling_frequency == 1000
    assert ecg.samples.shape == (10000, 12)
    assert ecg.leads_found == LEADS and ecg.leads_derived == ()
    assert ecg.units == ("uV",)
    np.testing.assert_allclose(ecg.samples[0, :3], [100.0, 112.5, 12.5])
    np.testing.assert_allclose(ecg.samples, sample.waveform_array(0), atol=1e-3)
    assert ecg.sop_instance_uid == sample.SOPInstanceUID
    assert ecg.study_instance_uid == sample.StudyInstanceUID
    assert ecg.duration_s == pytest.approx(10.0)


def test_real_sample_resampled_to_500hz(sample):
    ecg = decode(sample)
    model_input = to_model_input(ecg)
    assert model_input.shape == (5000, 12) and model_input.dtype == np.float32
    expected = resample_poly(sample.waveform_array(0), 1, 2, axis=0, padtype="line")
    np.testing.assert_allclose(model_input, expected, atol=0.05)


def test_samples_are_read_only(sample):
    ecg = decode(sample)
    with pytest.raises(ValueError):
        ecg.samples[0, 0] = 1.0


# -- every storage class and sample format ------------------------------------------------


@pytest.mark.parametrize(
    ("sop_class", "interpretation", "sensitivity"),
    [
        (TWELVE_LEAD, "SS", 2.5),
        (GENERAL_ECG, "SS", 1.0),
        (AMBULATORY_ECG, "SB", 20.0),
        (GENERAL_32BIT_ECG, "SL", 0.1),
    ],
)
def test_each_sop_class(sop_class, interpretation, sensitivity):
    built = make_ecg(sop_class=sop_class, interpretation=interpretation, sensitivity=sensitivity)
    ecg = decode(built.dataset)
    assert_decodes_to_truth(built, ecg)
    assert ecg.sop_class_uid == sop_class


@pytest.mark.parametrize("transfer_syntax", TRANSFER_SYNTAXES)
def test_transfer_syntaxes_round_trip_through_a_file(tmp_path, transfer_syntax):
    built = make_ecg(fs=500, pad_samples=100)
    path = built.write(tmp_path / "ecg.dcm", transfer_syntax)
    dataset = pydicom.dcmread(path)
    assert dataset.file_meta.TransferSyntaxUID == transfer_syntax
    assert_decodes_to_truth(built, decode(dataset))


@pytest.mark.parametrize("coding", ["MDC", "SCPECG", "numeric", "meaning"])
@pytest.mark.parametrize("shuffle_seed", [None, 7])
def test_lead_codes_and_order(coding, shuffle_seed):
    built = make_ecg(coding=coding, shuffle_seed=shuffle_seed)
    assert_decodes_to_truth(built)


def test_extra_leads_are_ignored():
    built = make_ecg(leads=(*LEADS, "V7", "V3R"), shuffle_seed=3)
    ecg = decode(built.dataset)
    assert ecg.leads_found == LEADS
    assert_decodes_to_truth(built, ecg)


@pytest.mark.parametrize(
    ("value", "scheme", "meaning", "lead"),
    [
        ("2:1", "MDC", "", "I"),
        ("2:64", "MDC", "", "aVF"),
        ("131073", "MDC", "", "I"),
        ("131136", "", "", "aVF"),
        ("5.6.3-9-61", "SCPECG", "", "III"),
        ("X", "99LOCAL", "Lead aVR", "aVR"),
        ("X", "99LOCAL", "lead ii", "II"),
        ("X", "99LOCAL", "V6", "V6"),
        ("2:9", "MDC", "Lead V7", None),
        ("X", "99LOCAL", "Lead V10", None),
        ("X", "99LOCAL", "Respiration", None),
    ],
)
def test_lead_from_code(value, scheme, meaning, lead):
    assert waveform.lead_from_code(value, scheme, meaning) == lead


# -- calibration --------------------------------------------------------------------------


def test_millivolts_with_correction_factor_and_baseline():
    built = make_ecg(units="mV", sensitivity=0.001, correction=2.5, baseline=0.05)
    ecg = decode(built.dataset)
    assert ecg.units == ("mV",)
    assert_decodes_to_truth(built, ecg)


def test_scale_held_in_the_correction_factor():
    # ecg2dcm-style writers: sensitivity 1, uV per bit in the correction factor.
    built = make_ecg(sensitivity=1.0, correction=4.88)
    assert_decodes_to_truth(built)


def test_missing_units_are_taken_as_microvolts_and_said_so():
    built = make_ecg(units=None)
    ecg = decode(built.dataset)
    assert ecg.units == ("uV (assumed)",)
    assert_decodes_to_truth(built, ecg)


def test_twelve_bits_stored_are_sign_extended():
    built = make_ecg(bits_stored=12, sensitivity=5.0)
    assert_decodes_to_truth(built)


def test_trailing_padding_is_removed():
    built = make_ecg(seconds=9.0, pad_samples=500)
    ecg = decode(built.dataset)
    assert ecg.samples.shape[0] == 4500
    assert_decodes_to_truth(built, ecg)


def test_padding_inside_the_recording_is_interpolated():
    built = make_ecg(signal=np.tile(np.linspace(-500, 500, 5000)[:, None], (1, 12)) + np.arange(12))
    group = built.dataset.WaveformSequence[0]
    raw = np.frombuffer(group.WaveformData, dtype="<i2").reshape(5000, 12).copy()
    raw[2000:2010, 3] = -32768
    group.WaveformData = raw.tobytes()
    group.WaveformPaddingValue = np.int16(-32768).tobytes()
    ecg = decode(built.dataset)
    assert ecg.samples.shape == (5000, 12)
    np.testing.assert_allclose(ecg.samples, built.truth_uv, atol=built.lsb_uv)


# -- derived leads ------------------------------------------------------------------------


def test_eight_lead_file_derives_the_other_limb_leads():
    built = make_ecg(leads=EIGHT_LEADS, shuffle_seed=1)
    ecg = decode(built.dataset)
    assert ecg.leads_found == EIGHT_LEADS
    assert ecg.leads_derived == ("III", "aVR", "aVL", "aVF")
    i, ii = ecg.samples[:, 0].astype(float), ecg.samples[:, 1].astype(float)
    np.testing.assert_allclose(ecg.samples[:, 2], ii - i, atol=1e-3)
    np.testing.assert_allclose(ecg.samples[:, 3], -(i + ii) / 2, atol=1e-3)
    np.testing.assert_allclose(ecg.samples[:, 4], i - ii / 2, atol=1e-3)
    np.testing.assert_allclose(ecg.samples[:, 5], ii - i / 2, atol=1e-3)
    # Derived from two quantised leads: up to 1.5 LSB from the true signal.
    np.testing.assert_allclose(ecg.samples, built.truth_uv, atol=1.5 * built.lsb_uv)


def test_derivation_formulas():
    i, ii = np.array([100.0, -40.0]), np.array([300.0, 20.0])
    derived = derive_limb_leads(i, ii)
    np.testing.assert_allclose(derived["III"], [200.0, 60.0])
    np.testing.assert_allclose(derived["aVR"], [-200.0, 10.0])
    np.testing.assert_allclose(derived["aVL"], [-50.0, -50.0])
    np.testing.assert_allclose(derived["aVF"], [250.0, 40.0])


def test_recorded_limb_leads_are_kept_not_derived():
    built = make_ecg(leads=(*EIGHT_LEADS, "aVR"))
    ecg = decode(built.dataset)
    assert ecg.leads_derived == ("III", "aVL", "aVF")


# -- group choice -------------------------------------------------------------------------


def test_median_beat_group_is_never_chosen_even_when_listed_first():
    built = make_ecg(median_group=True)
    groups = built.dataset.WaveformSequence
    built.dataset.WaveformSequence = [groups[1], groups[0]]
    ecg = decode(built.dataset)
    assert ecg.group_label == "RHYTHM"
    assert_decodes_to_truth(built, ecg)


def test_unlabelled_groups_choose_the_longest():
    short, long_ = make_ecg(seconds=6.0), make_ecg(seconds=10.0)
    for built in (short, long_):
        del built.dataset.WaveformSequence[0].MultiplexGroupLabel
    long_.dataset.WaveformSequence = [
        short.dataset.WaveformSequence[0],
        long_.dataset.WaveformSequence[0],
    ]
    assert decode(long_.dataset).samples.shape[0] == 5000


# -- resampling and length policy ---------------------------------------------------------


@pytest.mark.parametrize("fs", [200, 250, 400, 500, 600, 1000, 1024])
def test_every_common_rate_gives_the_model_input(fs):
    built = make_ecg(fs=fs, signal=sinusoid_signal(fs, 10.0))
    model_input = to_model_input(decode(built.dataset))
    assert model_input.shape == (5000, 12) and model_input.dtype == np.float32
    # Smooth limb leads must match the same signal sampled at 500 Hz.
    expected = sinusoid_signal(500, 10.0)
    inner = slice(100, 4900)
    np.testing.assert_allclose(model_input[inner, :6], expected[inner, :6], atol=built.lsb_uv + 2)


def test_resampling_keeps_a_flat_line_flat_at_the_edges():
    flat = np.full((10000, 12), 1000.0, dtype=np.float32)
    out = resample(flat, 1000, 500)
    np.testing.assert_allclose(out, 1000.0, atol=1e-2)


def test_longer_recording_is_cropped_to_its_centre():
    built = make_ecg(fs=500, seconds=12.0)
    model_input = to_model_input(decode(built.dataset))
    np.testing.assert_allclose(model_input, built.truth_uv[500:5500], atol=built.lsb_uv)


def test_shorter_recording_is_zero_padded_around_its_centre():
    built = make_ecg(fs=500, seconds=8.0)
    model_input = to_model_input(decode(built.dataset))
    assert np.all(model_input[:500] == 0) and np.all(model_input[4500:] == 0)
    np.testing.assert_allclose(model_input[500:4500], built.truth_uv, atol=built.lsb_uv)


@settings(max_examples=40, deadline=None)
@given(
    fs=st.one_of(st.sampled_from([200, 250, 400, 600, 1000, 1024]), st.integers(100, 2000)),
    frequency=st.floats(0.5, 35.0),
    amplitude=st.floats(10.0, 5000.0),
    phase=st.floats(0.0, 6.28),
)
@example(fs=1999, frequency=10.0, amplitude=1000.0, phase=0.0)  # a prime rate: exact ratio
def test_resampling_keeps_amplitude_and_frequency(fs, frequency, amplitude, phase):
    t = np.arange(int(fs * 10)) / fs
    x = amplitude * np.sin(2 * np.pi * frequency * t + phase)
    out = resample(np.tile(x[:, None], (1, 2)), fs, 500)[:, 0].astype(float)
    assert abs(out.shape[0] - 5000) <= 1
    t500 = np.arange(out.shape[0]) / 500
    inner = slice(250, out.shape[0] - 250)  # away from the edges
    # Least-squares fit at the true frequency gives the amplitude kept through resampling.
    basis = np.stack(
        [np.sin(2 * np.pi * frequency * t500), np.cos(2 * np.pi * frequency * t500)], 1
    )
    coef, *_ = np.linalg.lstsq(basis[inner], out[inner], rcond=None)
    assert np.hypot(*coef) == pytest.approx(amplitude, rel=0.01)
    # And the spectrum peaks at the same frequency (0.1 Hz bins over 10 s).
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    peak = np.fft.rfftfreq(out.size, 1 / 500)[np.argmax(spectrum)]
    assert peak == pytest.approx(frequency, abs=0.11)


# -- failures: each with a reason an administrator can act on ------------------------------


def _drop_sensitivity(built):
    del built.dataset.WaveformSequence[0].ChannelDefinitionSequence[4].ChannelSensitivity
    return built


def _truncate_data(built):
    group = built.dataset.WaveformSequence[0]
    group.WaveformData = group.WaveformData[:-240]
    return built


def _median_only():
    built = make_ecg(median_group=True)
    built.dataset.WaveformSequence = [built.dataset.WaveformSequence[1]]
    return built


def _no_waveform():
    built = make_ecg()
    del built.dataset.WaveformSequence
    return built


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (_no_waveform, "no Waveform Sequence"),
        (_median_only, "no usable rhythm group"),
        (lambda: make_ecg(leads=[lead for lead in LEADS if lead != "V3"]), "V3 missing"),
        (lambda: make_ecg(leads=("I", "III", "V1", "V2", "V3", "V4", "V5", "V6")), "II missing"),
        (lambda: _drop_sensitivity(make_ecg()), "uncalibrated"),
        (lambda: make_ecg(sensitivity=None), "uncalibrated"),
        (lambda: make_ecg(fs=40, seconds=10), "sampling rate 40 Hz is out of range"),
        (lambda: make_ecg(fs=2500, seconds=6), "sampling rate 2500 Hz is out of range"),
        (lambda: make_ecg(seconds=4.0), "4.00 s long"),
        (lambda: make_ecg(fs=200, seconds=61.0), "61.00 s long"),
        (lambda: make_ecg(seconds=4.5, pad_samples=500), "once Waveform Padding Value"),
        (lambda: _truncate_data(make_ecg()), "data length is inconsistent"),
        (lambda: make_ecg(units="degC"), "not a voltage unit"),
    ],
)
def test_invalid_ecgs_are_refused_with_a_reason(build, reason):
    with pytest.raises(InvalidECG) as caught:
        decode(build().dataset)
    assert reason in caught.value.reason


def test_four_by_three_sequential_groups_are_refused():
    # Sequential 2.5 s groups of three leads each are not a simultaneous 12-lead recording.
    built = make_ecg()
    group = built.dataset.WaveformSequence[0]
    group.NumberOfWaveformChannels = 3
    group.ChannelDefinitionSequence = group.ChannelDefinitionSequence[:3]
    group.NumberOfWaveformSamples = 1250
    group.WaveformData = group.WaveformData[: 3 * 1250 * 2]
    with pytest.raises(InvalidECG, match="missing"):
        decode(built.dataset)
