"""Build ECG waveform DICOM objects in code, with a known signal to check decoding against.

Every variant the decoder must handle is a parameter: SOP class, sampling rate, duration,
lead coding (MDC, SCP-ECG, numeric MDC, Code Meaning only), lead order, units, sensitivity,
correction factor, baseline, Bits Stored, padding, extra groups and transfer syntax; and the
Patient ID, for benchmarks of many patients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from ecg2age_dicom.waveform import LEADS, derive_limb_leads

TWELVE_LEAD = "1.2.840.10008.5.1.4.1.1.9.1.1"
GENERAL_ECG = "1.2.840.10008.5.1.4.1.1.9.1.2"
AMBULATORY_ECG = "1.2.840.10008.5.1.4.1.1.9.1.3"
GENERAL_32BIT_ECG = "1.2.840.10008.5.1.4.1.1.9.1.4"

_NUMBER = {
    "I": 1,
    "II": 2,
    "V1": 3,
    "V2": 4,
    "V3": 5,
    "V4": 6,
    "V5": 7,
    "V6": 8,
    "III": 61,
    "aVR": 62,
    "aVL": 63,
    "aVF": 64,
    "V7": 9,
    "V3R": 12,
}
_MEANING = {"I": "Lead I (Einthoven)", "II": "Lead II", "III": "Lead III"}
_UV_PER_UNIT = {"uV": 1.0, "mV": 1000.0}
_DTYPE = {"SS": "i2", "SL": "i4", "SB": "i1"}


@dataclass
class FactoryECG:
    """A built dataset and the signal it encodes (uV, (n, 12), :data:`LEADS` order)."""

    dataset: Dataset
    truth_uv: np.ndarray
    lsb_uv: float

    def write(self, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
        """Save as a Part 10 file; big-endian files get their waveform bytes swapped."""
        ds = self.dataset
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        if transfer_syntax == ExplicitVRBigEndian:
            for group in ds.WaveformSequence:
                dtype = _DTYPE[group.WaveformSampleInterpretation]
                data = np.frombuffer(group.WaveformData, dtype="<" + dtype)
                group.WaveformData = data.astype(">" + dtype).tobytes()
                if "WaveformPaddingValue" in group:
                    pad = np.frombuffer(group.WaveformPaddingValue, dtype="<" + dtype)
                    group.WaveformPaddingValue = pad.astype(">" + dtype).tobytes()
        little = transfer_syntax != ExplicitVRBigEndian
        implicit = transfer_syntax == ImplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True, little_endian=little, implicit_vr=implicit)
        return path


# One beat as Gaussian waves (P, Q, R, S, T): centre (s from R), width (s), amplitude per lead
# in uV for I, II and V1-V6; III and the augmented leads follow from I and II.
_WAVES = ((-0.2, 0.025), (-0.03, 0.008), (0.0, 0.01), (0.03, 0.008), (0.25, 0.04))
_AMPLITUDES_UV = {
    "I": (80, -50, 600, -100, 150),
    "II": (120, -60, 900, -150, 250),
    "V1": (60, 0, 200, -900, -80),
    "V2": (60, 0, 400, -1200, 200),
    "V3": (60, -40, 700, -700, 300),
    "V4": (70, -60, 1200, -400, 300),
    "V5": (70, -80, 1100, -200, 250),
    "V6": (70, -80, 900, -100, 200),
}


def sinusoid_signal(fs: float, seconds: float) -> np.ndarray:
    """Smooth limb leads (sinusoids, band-limited far below every rate: any resampling of them
    must give the same curve) and precordial sinusoids; Einthoven-consistent."""
    t = np.arange(round(fs * seconds)) / fs
    heart = 2 * np.pi * 1.2 * t
    out = np.empty((t.size, len(LEADS)))
    out[:, 0] = 400 * np.sin(heart) + 60 * np.sin(3 * heart + 0.3)
    out[:, 1] = 700 * np.sin(heart + 0.4) + 90 * np.cos(2 * heart)
    for lead, values in derive_limb_leads(out[:, 0], out[:, 1]).items():
        out[:, LEADS.index(lead)] = values
    for k in range(6, 12):
        out[:, k] = (300 + 150 * k) * np.sin(heart + 0.2 * k)
    return out


def ecg_signal(fs: float, seconds: float, seed: int = 0) -> np.ndarray:
    """A synthetic 12-lead ECG in uV: PQRST beats at about 72 / min with a little rate
    variability and 5 uV noise, Einthoven-consistent limb leads."""
    rng = np.random.default_rng(seed)
    n = round(fs * seconds)
    beats = np.cumsum(0.83 + rng.normal(0, 0.03, int(seconds / 0.6) + 2)) - 0.4
    # Each beat's waves within 0.4 s before and 0.6 s after its R: a window per beat.
    window = np.arange(-round(0.4 * fs), round(0.6 * fs))
    starts = np.rint(beats * fs).astype(int)
    offsets = (starts[:, None] + window[None, :]) / fs - beats[:, None]
    out = np.empty((n, len(LEADS)))
    for lead, amplitudes in _AMPLITUDES_UV.items():
        shape = sum(
            amplitude * np.exp(-0.5 * ((offsets - centre) / width) ** 2)
            for (centre, width), amplitude in zip(_WAVES, amplitudes, strict=True)
        )
        values = rng.normal(0, 5, n)
        for start, beat in zip(starts, shape, strict=True):
            at = start + window
            keep = (at >= 0) & (at < n)
            values[at[keep]] += beat[keep]
        out[:, LEADS.index(lead)] = values
    for lead, values in derive_limb_leads(out[:, 0], out[:, 1]).items():
        out[:, LEADS.index(lead)] = values
    return out


def _code(lead: str, coding: str) -> Dataset:
    code = Dataset()
    number = _NUMBER[lead]
    meaning = _MEANING.get(lead, f"Lead {lead}")
    if coding == "MDC":
        code.CodeValue, code.CodingSchemeDesignator = f"2:{number}", "MDC"
    elif coding == "SCPECG":
        code.CodeValue, code.CodingSchemeDesignator = f"5.6.3-9-{number}", "SCPECG"
        code.CodingSchemeVersion = "1.3"
    elif coding == "numeric":
        code.CodeValue, code.CodingSchemeDesignator = str(131072 + number), "MDC"
    elif coding == "meaning":
        code.CodeValue, code.CodingSchemeDesignator = f"L{number}", "99LOCAL"
    else:
        raise ValueError(coding)
    code.CodeMeaning = meaning
    return code


def make_ecg(
    *,
    sop_class: str = TWELVE_LEAD,
    fs: float = 500.0,
    seconds: float = 10.0,
    leads: Sequence[str] = LEADS,
    coding: str = "MDC",
    shuffle_seed: int | None = None,
    units: str | None = "uV",
    sensitivity: float | None = 2.5,
    correction: float = 1.0,
    baseline: float = 0.0,
    interpretation: str = "SS",
    bits_stored: int | None = None,
    pad_samples: int = 0,
    label: str = "RHYTHM",
    median_group: bool = False,
    signal: np.ndarray | None = None,
    patient_age: str | None = "051Y",
    patient_id: str = "FACTORY-1",
) -> FactoryECG:
    """Build an ECG dataset; see the module docstring for what each parameter varies."""
    truth = ecg_signal(fs, seconds) if signal is None else np.asarray(signal, dtype=float)
    order = list(leads)
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(order)
    uv = _UV_PER_UNIT.get(units or "uV", 1.0)
    lsb_uv = (sensitivity or 1.0) * correction * uv

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "ECG"
    ds.PatientName = "Test^Factory"
    ds.PatientID = patient_id
    if patient_age:
        ds.PatientAge = patient_age
    ds.StudyDate = "20240102"

    def group(samples: np.ndarray, pad: int, group_label: str) -> Dataset:
        return _group(
            samples,
            order,
            fs,
            coding,
            units,
            sensitivity,
            correction,
            baseline,
            interpretation,
            bits_stored,
            pad,
            group_label,
            lsb_uv,
        )

    groups = [group(truth, pad_samples, label)]
    if median_group:
        groups.append(group(truth[: int(fs * 1.2)], 0, "MEDIAN BEAT"))
    ds.WaveformSequence = DicomSequence(groups)
    return FactoryECG(ds, truth, lsb_uv)


def _group(
    truth: np.ndarray,
    order: Sequence[str],
    fs: float,
    coding: str,
    units: str | None,
    sensitivity: float | None,
    correction: float,
    baseline: float,
    interpretation: str,
    bits_stored: int | None,
    pad_samples: int,
    label: str,
    lsb_uv: float,
) -> Dataset:
    uv = _UV_PER_UNIT.get(units or "uV", 1.0)
    columns = []
    for lead in order:
        values = truth[:, LEADS.index(lead)] if lead in LEADS else truth[:, 6] * 0.5
        columns.append(np.round((values / uv - baseline) / (lsb_uv / uv)))
    raw = np.stack(columns, axis=1)
    dtype = np.dtype("<" + _DTYPE[interpretation])
    pad_value = np.iinfo(dtype).min
    if pad_samples:
        raw = np.concatenate([raw, np.full((pad_samples, raw.shape[1]), pad_value)])
    if bits_stored is not None:
        raw = np.asarray(raw, dtype=np.int64) & ((1 << bits_stored) - 1)  # upper bits not set
    raw = raw.astype(dtype)

    group = Dataset()
    group.MultiplexGroupLabel = label
    group.WaveformOriginality = "ORIGINAL" if label == "RHYTHM" else "DERIVED"
    group.NumberOfWaveformChannels = len(order)
    group.NumberOfWaveformSamples = raw.shape[0]
    group.SamplingFrequency = f"{fs:g}"
    group.WaveformBitsAllocated = dtype.itemsize * 8
    group.WaveformSampleInterpretation = interpretation
    if pad_samples:
        group.WaveformPaddingValue = np.array([pad_value], dtype=dtype).tobytes()
    channels = []
    for lead in order:
        channel = Dataset()
        channel.ChannelSourceSequence = DicomSequence([_code(lead, coding)])
        if sensitivity is not None:
            channel.ChannelSensitivity = f"{sensitivity:g}"
            if units is not None:
                unit = Dataset()
                unit.CodeValue, unit.CodingSchemeDesignator = units, "UCUM"
                unit.CodeMeaning = {"uV": "microvolt", "mV": "millivolt"}.get(units, units)
                channel.ChannelSensitivityUnitsSequence = DicomSequence([unit])
            channel.ChannelSensitivityCorrectionFactor = f"{correction:g}"
        channel.ChannelBaseline = f"{baseline:g}"
        channel.WaveformBitsStored = bits_stored or dtype.itemsize * 8
        channels.append(channel)
    group.ChannelDefinitionSequence = DicomSequence(channels)
    data = raw.tobytes()
    group.WaveformData = data + b"\0" * (len(data) % 2)
    return group


TRANSFER_SYNTAXES = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
)
