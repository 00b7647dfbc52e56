"""Decoding DICOM ECG waveforms into one value the model can take.

This module owns the step from a pydicom ``Dataset`` of any ECG waveform storage class
(12-lead, General, Ambulatory, General 32-bit) to an :class:`ECG`: float32 samples in
microvolts, shape (n, 12), leads in the order I, II, III, aVR, aVL, aVF, V1..V6, in two steps:
:func:`rhythm_group` checks the header (the listener stops there) and :func:`decode` reads
the samples (the worker). :func:`to_model_input` then resamples and crops/pads that to the
model's (5000, 12) at 500 Hz.

==============================================  =============================================
element                                         use
==============================================  =============================================
Waveform Sequence (5400,0100)                   one item per multiplex group; median-beat
                                                groups are never used
Multiplex Group Label (003A,0020), Waveform     choosing the rhythm group
Originality (003A,0004)
Sampling Frequency (003A,001A)                  50-2000 Hz, one finite number
Number of Waveform Channels (003A,0005) /       <= 64 channels, 5-60 s of samples
Samples (003A,0010)
Waveform Bits Allocated (5400,1004), Sample     8/16/32-bit signed or unsigned; mu-law /
Interpretation (5400,1006)                      A-law refused
Channel Source Sequence (003A,0208)             the lead (MDC, SCP-ECG, Code Meaning)
Channel Sensitivity (003A,0210) + Units         raw x sensitivity x correction + baseline,
Sequence (003A,0211), Correction Factor         in uV; each a single finite number
(003A,0212), Channel Baseline (003A,0213)
Waveform Bits Stored (003A,021A)                12-bit carts: sign-extended
Waveform Padding Value (5400,100A)              cropped at the ends, interpolated inside
Waveform Data (5400,1010)                       length must match the header
==============================================  =============================================

Everything here is a function of its input: no files, no network, no clock (channel
definitions already seen are looked up in a cache rather than decoded again). Anything that
cannot be a resting 12-lead ECG raises :class:`~ecg2age_dicom.errors.InvalidECG` with a
reason that names the attribute at fault.
"""

from __future__ import annotations

import numbers
import re
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from scipy.signal import firwin, resample_poly

from ecg2age_dicom.errors import InvalidECG
from ecg2age_dicom.identity import shown

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
"""The model's lead order (ECG2Age and every model card here)."""

REQUIRED_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
"""Leads that must be recorded: the other four limb leads can be derived from I and II."""

LIMB_LEADS_FROM_I_II: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")

MIN_SAMPLING_HZ = 50.0
MAX_SAMPLING_HZ = 2000.0
MIN_DURATION_S = 5.0
MAX_DURATION_S = 60.0
STANDARD_HZ = 500
STANDARD_SECONDS = 10.0
"""The standard resting ECG: 10 s at 500 Hz (the default model's input; the PDF page draws it)."""

# CID 3001 lead numbers shared by MDC ("2:n", or the plain number 131072 + n) and SCP-ECG
# ("5.6.3-9-n").
_LEAD_BY_NUMBER: dict[int, str] = {
    1: "I",
    2: "II",
    3: "V1",
    4: "V2",
    5: "V3",
    6: "V4",
    7: "V5",
    8: "V6",
    61: "III",
    62: "aVR",
    63: "aVL",
    64: "aVF",
}
_MDC_NUMERIC_BASE = 131072  # MDC partition 2 (ECG leads) as a 32-bit code: (2 << 16) + n
_CANONICAL = {name.upper(): name for name in LEADS}
_MEANING = re.compile(r"^\s*(?:lead\s+)?(III|II|I|AVR|AVL|AVF|V[1-6])(?![0-9A-Z])", re.IGNORECASE)

# Channel sensitivity units (UCUM) to microvolts.
_UV_PER_UNIT: dict[str, float] = {"uV": 1.0, "mV": 1000.0, "V": 1_000_000.0, "nV": 0.001}
_UNIT_ALIASES: dict[str, str] = {
    "UV": "uV",
    "µV": "uV",
    "μV": "uV",
    "MICROVOLT": "uV",
    "MV": "mV",
    "MILLIVOLT": "mV",
    "NV": "nV",
}

# Sample interpretations this decoder reads; mu-law / A-law (MB, AB) are not resting ECGs.
_DTYPES: dict[tuple[int, str], str] = {
    (8, "SB"): "i1",
    (16, "SS"): "i2",
    (32, "SL"): "i4",
    (8, "UB"): "u1",
    (16, "US"): "u2",
    (32, "UL"): "u4",
}


@dataclass(frozen=True)
class ECG:
    """A decoded resting 12-lead ECG, the one value that crosses from decoding to the model.

    Attributes
    ----------
    samples:
        float32 array (n, 12) in microvolts, columns in :data:`LEADS` order (read-only).
    sampling_frequency:
        Samples per second of ``samples`` as recorded.
    leads_found:
        The :data:`LEADS` that were recorded in the chosen multiplex group.
    leads_derived:
        The limb leads computed from I and II because the file did not hold them.
    group_label:
        Multiplex Group Label of the chosen group ("" when absent).
    units:
        Channel sensitivity units found on the used channels, e.g. ``("uV",)``.
    sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid:
        The source object's identity.
    """

    samples: np.ndarray
    sampling_frequency: float
    leads_found: tuple[str, ...]
    leads_derived: tuple[str, ...]
    group_label: str
    units: tuple[str, ...]
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str

    @property
    def duration_s(self) -> float:
        """Recording length in seconds."""
        return self.samples.shape[0] / self.sampling_frequency


@dataclass(frozen=True)
class Channel:
    """One channel of a multiplex group, as its Channel Definition Sequence item says.

    ``lead`` is None for a channel that is not one of :data:`LEADS`. ``gain_uv`` and
    ``offset_uv`` turn raw counts into microvolts; ``problem`` says why they cannot (no
    Channel Sensitivity, or a unit that is not a voltage), raised only if the lead is used.
    """

    lead: str | None
    label: str
    gain_uv: float = 1.0
    offset_uv: float = 0.0
    unit: str = ""
    bits_stored: int = 0
    problem: str | None = None


def lead_from_code(value: str, scheme: str, meaning: str) -> str | None:
    """Name of the lead a Channel Source code identifies, or None for any other channel.

    Matches MDC ``2:n``, SCP-ECG ``5.6.3-9-n`` and the numeric MDC form ``131072 + n`` on
    code value and scheme, then falls back to the Code Meaning ("Lead I (Einthoven)", "aVR").
    """
    value, scheme = value.strip(), scheme.strip().upper()
    number: int | None = None
    if scheme == "MDC" and value.startswith("2:") and value[2:].isdigit():
        number = int(value[2:])
    elif scheme.startswith("SCPECG") and value.startswith("5.6.3-9-") and value[8:].isdigit():
        number = int(value[8:])
    elif value.isdigit() and int(value) > _MDC_NUMERIC_BASE:
        number = int(value) - _MDC_NUMERIC_BASE
    if number is not None and number in _LEAD_BY_NUMBER:
        return _LEAD_BY_NUMBER[number]
    if number is not None:
        return None  # a known scheme naming another lead (V7, X, derived...): not one of ours
    match = _MEANING.match(meaning)
    return _CANONICAL[match.group(1).upper()] if match else None


MAX_CHANNELS = 64
"""Channels per multiplex group: the ECG IODs allow at most 24; more is not a resting ECG."""
MAX_CHANNEL_DEFINITION_BYTES = MAX_CHANNELS * 4096
"""Encoded size of a Channel Definition Sequence beyond which it is not parsed at all."""
MAX_GAIN_UV = 1.0e5  # uV per count: a 16-bit sample would span +-3 V, far above any ECG
MAX_OFFSET_UV = 1.0e7


def _number(item: Dataset, keyword: str, label: str, default: float | None = None) -> float:
    """A single finite number from ``item`` (``default`` when absent or empty, if given), or
    :class:`InvalidECG` naming the attribute."""
    value: object = None
    try:
        value = item.get(keyword)  # pydicom converts here: DS "abc" raises
        if default is not None and value in (None, ""):
            return default
        if not isinstance(value, numbers.Real):  # absent, multi-valued (500\\250), text
            raise TypeError
        number = float(value)
        if not np.isfinite(number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InvalidECG(
            f"{label}: {keyword} {shown(value)} is not a single finite number"
        ) from None
    return number


def _count(item: Dataset, keyword: str, label: str, default: int | None = None) -> int:
    """A whole number from ``item`` (US / UL values), or :class:`InvalidECG`."""
    number = _number(item, keyword, label, default)
    if not number.is_integer():
        raise InvalidECG(f"{label}: {keyword} {number:g} is not a whole number")
    return int(number)


def _channel(index: int, definition: Dataset) -> Channel:
    source = definition.get("ChannelSourceSequence")
    if not source:
        return Channel(None, f"channel {index + 1}")
    code = source[0]
    value = str(code.get("CodeValue", code.get("LongCodeValue", "")))
    lead = lead_from_code(
        value, str(code.get("CodingSchemeDesignator", "")), str(code.get("CodeMeaning", ""))
    )
    label = f"channel {index + 1} ({lead or shown(code.get('CodeMeaning', value), 40)})"
    if definition.get("ChannelSensitivity") in (None, ""):
        return Channel(
            lead,
            label,
            problem=f"{label} is uncalibrated: no Channel Sensitivity (003A,0210), so its raw "
            "counts cannot be converted to microvolts",
        )
    try:
        unit, uv = _uv_per_unit(definition, label)
        sensitivity = _number(definition, "ChannelSensitivity", label)
        correction = _number(definition, "ChannelSensitivityCorrectionFactor", label, 1.0)
        baseline = _number(definition, "ChannelBaseline", label, 0.0)
        bits_stored = _count(definition, "WaveformBitsStored", label, 0)
        gain, offset = sensitivity * correction * uv, baseline * uv
        if not (0 < abs(gain) <= MAX_GAIN_UV and abs(offset) <= MAX_OFFSET_UV):
            raise InvalidECG(
                f"{label}: calibration of {gain:g} uV per count + {offset:g} uV is not that of "
                "an ECG channel"
            )
    except InvalidECG as exc:
        return Channel(lead, label, problem=exc.reason)
    return Channel(lead, label, gain, offset, unit, bits_stored)


CHANNEL_DEFINITION_SEQUENCE = 0x003A0200
_CHANNEL_CACHE_SIZE = 256
_CHANNELS_BY_ENCODING: dict[Hashable, tuple[Channel, ...]] = {}
_CHANNELS_LOCK = threading.Lock()  # listener threads decode concurrently


def channels_of(group: Dataset) -> tuple[Channel, ...]:
    """The channels of a multiplex group: lead, label and calibration of each.

    A cart writes the same Channel Definition Sequence in every ECG, and turning its ~150
    elements into Python values is most of the decoding time; so a sequence read from a file
    is looked up by its encoded values first, and converted only when new. A sequence over
    :data:`MAX_CHANNEL_DEFINITION_BYTES` or :data:`MAX_CHANNELS` items is refused unparsed.

    Raises
    ------
    InvalidECG
        The sequence is too large to be an ECG's.
    """
    element = group.get_item(CHANNEL_DEFINITION_SEQUENCE)
    if element is None:
        return ()
    if _encoded_length(element) > MAX_CHANNEL_DEFINITION_BYTES:
        raise InvalidECG(
            f"Channel Definition Sequence is {_encoded_length(element)} bytes long: more than "
            f"{MAX_CHANNELS} channels cannot be a resting ECG"
        )
    key = _encoded_key(element)
    if key is None:
        return _channels(group.ChannelDefinitionSequence)
    key = (key, group.original_encoding, str(group.original_character_set))
    with _CHANNELS_LOCK:
        channels = _CHANNELS_BY_ENCODING.get(key)
    if channels is None:
        channels = _channels(group.ChannelDefinitionSequence)
        with _CHANNELS_LOCK:
            if len(_CHANNELS_BY_ENCODING) >= _CHANNEL_CACHE_SIZE:  # many carts: drop the oldest
                del _CHANNELS_BY_ENCODING[next(iter(_CHANNELS_BY_ENCODING))]
            _CHANNELS_BY_ENCODING[key] = channels
    return channels


def _encoded_length(element: DataElement | RawDataElement) -> int:
    """The length of a value still encoded as read (0 once pydicom has converted it)."""
    return element.length if isinstance(element, RawDataElement) else 0


def _encoded_key(element: DataElement | RawDataElement) -> Hashable | None:
    """The element's value as read from the file, without converting it; None if converted.

    pydicom keeps a defined-length sequence as bytes, but reads an undefined-length one into
    items whose elements stay encoded: both are keys.
    """
    if isinstance(element, RawDataElement):
        return element.tag, element.value
    if element.VR != "SQ":
        return None
    items = []
    item: Dataset
    for item in element.value:
        # keys(), not the item itself: iterating a Dataset converts every element.
        elements = tuple(_encoded_key(item.get_item(tag)) for tag in item.keys())  # noqa: SIM118
        if None in elements:
            return None
        items.append(elements)
    return element.tag, tuple(items)


def _channels(definitions: Sequence[Dataset]) -> tuple[Channel, ...]:
    if len(definitions) > MAX_CHANNELS:
        raise InvalidECG(
            f"Channel Definition Sequence has {len(definitions)} items: more than "
            f"{MAX_CHANNELS} channels cannot be a resting ECG"
        )
    return tuple(_channel(index, definition) for index, definition in enumerate(definitions))


def _interpretation(group: Dataset) -> str:
    interpretation = str(group.get("WaveformSampleInterpretation", "")).strip().upper()
    if interpretation:
        return interpretation
    bits = group.get("WaveformBitsAllocated")
    return {8: "SB", 16: "SS", 32: "SL"}.get(bits if isinstance(bits, int) else 0, "")


def _sample_format(group: Dataset) -> tuple[int, str] | None:
    bits = group.get("WaveformBitsAllocated")
    key = (bits if isinstance(bits, int) else 0, _interpretation(group))
    return key if key in _DTYPES else None


def _is_median(group: Dataset) -> bool:
    label = str(group.get("MultiplexGroupLabel", "")).upper()
    return "MEDIAN" in label or "AVERAGE" in label or "TEMPLATE" in label


@dataclass(frozen=True)
class RhythmGroup:
    """The multiplex group used as the rhythm recording, checked from its header alone.

    Attributes
    ----------
    index:
        Its position in the Waveform Sequence.
    label:
        Multiplex Group Label ("" when absent).
    sampling_frequency:
        Samples per second.
    n_samples, n_channels:
        Number of Waveform Samples / Channels.
    dtype:
        The samples' numpy type, in the file's byte order.
    leads:
        The :data:`LEADS` recorded, in :data:`LEADS` order, each with its column and channel.
    """

    index: int
    label: str
    sampling_frequency: float
    n_samples: int
    n_channels: int
    dtype: np.dtype
    leads: tuple[tuple[str, int, Channel], ...]

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sampling_frequency


def rhythm_group(ds: Dataset) -> RhythmGroup:
    """Choose and check the rhythm group from the header, without reading a sample.

    Median-beat / template groups and groups in an unreadable sample format are never chosen.
    Among the rest, the first of: holds I, II and V1-V6 together; labelled RHYTHM; ORIGINAL;
    most samples. The chosen group must have a sampling rate of 50-2000 Hz, 5-60 s of
    samples, at most :data:`MAX_CHANNELS` channels, the required leads calibrated in a
    voltage unit, and Waveform Data of the length its header announces.

    Raises
    ------
    InvalidECG
        With a reason naming the attribute at fault.
    """
    groups = ds.get("WaveformSequence")
    if not groups:
        raise InvalidECG("no Waveform Sequence (5400,0100): the object holds no waveform data")
    candidates = {
        index: channels_of(group)
        for index, group in enumerate(groups)
        if not _is_median(group) and _sample_format(group) is not None
    }
    if not candidates:
        found = ", ".join(
            f"{shown(g.get('MultiplexGroupLabel', ''), 30)} "
            f"({shown(g.get('WaveformSampleInterpretation', '?'), 10)})"
            for g in list(groups)[:8]
        )
        raise InvalidECG(f"no usable rhythm group: the Waveform Sequence holds only {found}")

    def rank(index: int) -> tuple[bool, bool, bool, int]:
        group, leads = groups[index], {channel.lead for channel in candidates[index]}
        samples = group.get("NumberOfWaveformSamples")
        return (
            set(REQUIRED_LEADS) <= leads,
            "RHYTHM" in str(group.get("MultiplexGroupLabel", "")).upper(),
            str(group.get("WaveformOriginality", "")).upper() == "ORIGINAL",
            samples if isinstance(samples, int) else 0,
        )

    index = max(candidates, key=rank)
    group, channels = groups[index], candidates[index]
    label = str(group.get("MultiplexGroupLabel", ""))
    where = f"group {shown(label, 30)}"
    fs = _number(group, "SamplingFrequency", where)
    if not MIN_SAMPLING_HZ <= fs <= MAX_SAMPLING_HZ:
        raise InvalidECG(f"sampling rate {fs:g} Hz is out of range: accepted 50-2000 Hz ({where})")
    n_channels = _count(group, "NumberOfWaveformChannels", where)
    n_samples = _count(group, "NumberOfWaveformSamples", where)
    if not 0 < n_channels <= MAX_CHANNELS or n_samples < 1:
        raise InvalidECG(
            f"Number of Waveform Channels ({n_channels}) must be 1-{MAX_CHANNELS} and Number "
            f"of Waveform Samples ({n_samples}) positive ({where})"
        )
    if len(channels) != n_channels:
        raise InvalidECG(
            f"Channel Definition Sequence has {len(channels)} items but Number of Waveform "
            f"Channels is {n_channels}"
        )
    column_of: dict[str, int] = {}
    for column, channel in enumerate(channels):
        if channel.lead is not None:
            column_of.setdefault(channel.lead, column)
    missing = [lead for lead in REQUIRED_LEADS if lead not in column_of]
    if missing:
        found_names = ", ".join(lead for lead in LEADS if lead in column_of) or "none"
        raise InvalidECG(
            f"required lead(s) {', '.join(missing)} missing from {where} "
            f"(leads found: {found_names}); a resting 12-lead ECG needs I, II and V1-V6"
        )
    duration = n_samples / fs
    if not MIN_DURATION_S <= duration <= MAX_DURATION_S:
        raise InvalidECG(
            f"recording is {duration:.2f} s long: accepted {MIN_DURATION_S:g}-"
            f"{MAX_DURATION_S:g} s ({where}, {n_samples} samples at {fs:g} Hz)"
        )
    leads = tuple(
        (lead, column_of[lead], channels[column_of[lead]]) for lead in LEADS if lead in column_of
    )
    problem = next((channel.problem for _, _, channel in leads if channel.problem), None)
    if problem:
        raise InvalidECG(problem)
    sample_format = _sample_format(group)
    assert sample_format is not None  # candidates have one
    dtype = np.dtype(_DTYPES[sample_format]).newbyteorder(_byte_order(ds))
    data = group.get_item(WAVEFORM_DATA)
    if data is None:
        raise InvalidECG(f"{where} has no Waveform Data (5400,1010)")
    expected = n_channels * n_samples * dtype.itemsize
    length = _encoded_length(data) or len(data.value or b"")
    # OB/OW values are padded to an even length, so one spare byte is legal.
    if length not in (expected, expected + (expected % 2)):
        raise InvalidECG(
            f"Waveform Data holds {length} bytes but {n_channels} channels x {n_samples} "
            f"samples x {dtype.itemsize} bytes = {expected}: the data length is inconsistent"
        )
    return RhythmGroup(index, label, fs, n_samples, n_channels, dtype, leads)


WAVEFORM_DATA = 0x54001010


def _byte_order(ds: Dataset) -> Literal["<", ">"]:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") == "1.2.840.10008.1.2.2":
        return ">"
    little = ds.original_encoding[1]
    return "<" if little is None or little else ">"


def _raw_samples(ds: Dataset, group: RhythmGroup) -> np.ndarray:
    data = ds.WaveformSequence[group.index].WaveformData
    count = group.n_channels * group.n_samples
    return np.frombuffer(data, dtype=group.dtype, count=count).reshape(
        group.n_samples, group.n_channels
    )


def _sign_extend(raw: np.ndarray, bits_stored: int) -> np.ndarray:
    """Keep only the low ``bits_stored`` bits of each sample, sign-extended (12-bit carts)."""
    bits_allocated = raw.dtype.itemsize * 8
    if not 0 < bits_stored < bits_allocated:
        return raw
    shift = bits_allocated - bits_stored
    native = raw.astype(raw.dtype.newbyteorder("="))
    if raw.dtype.kind == "u":
        return native & ((1 << bits_stored) - 1)
    return (native << shift) >> shift


def _uv_per_unit(channel: Dataset, label: str) -> tuple[str, float]:
    units = channel.get("ChannelSensitivityUnitsSequence")
    if not units:
        # Type 1C when sensitivity is present; every writer seen omitting it meant microvolts.
        return "uV (assumed)", 1.0
    code = str(units[0].get("CodeValue", "")).strip()
    unit = code if code in _UV_PER_UNIT else _UNIT_ALIASES.get(code.upper())
    if unit is None:
        raise InvalidECG(
            f"{label}: Channel Sensitivity Units {shown(code, 20)} is not a voltage unit "
            "(uV, mV, V)"
        )
    return unit, _UV_PER_UNIT[unit]


def _fill_padding(values: np.ndarray, padded: np.ndarray) -> np.ndarray:
    """Drop rows padded in every used channel at either end; interpolate any padding left."""
    valid_rows = np.flatnonzero(~padded.all(axis=1))
    if valid_rows.size == 0:
        return values[:0]
    values, padded = (a[valid_rows[0] : valid_rows[-1] + 1] for a in (values, padded))
    positions = np.arange(values.shape[0])
    for column in range(values.shape[1]):
        holes = padded[:, column]
        if holes.any() and not holes.all():
            values[holes, column] = np.interp(
                positions[holes], positions[~holes], values[~holes, column]
            )
    return values


def _padding_value(ds: Dataset, group: RhythmGroup) -> np.generic | None:
    padding = ds.WaveformSequence[group.index].get("WaveformPaddingValue")
    if not isinstance(padding, bytes) or len(padding) < group.dtype.itemsize:
        return None
    return np.frombuffer(padding, dtype=group.dtype, count=1)[0]


def decode(ds: Dataset, group: RhythmGroup | None = None) -> ECG:
    """Decode a DICOM ECG waveform object into an :class:`ECG` in microvolts.

    Takes the rhythm group (:func:`rhythm_group`, unless the caller checked it already),
    de-interleaves its channels, applies Waveform Bits Stored, masks Waveform Padding Value,
    converts each channel to microvolts (raw x Channel Sensitivity x Sensitivity Correction
    Factor + Channel Baseline, in the channel's units), and derives III, aVR, aVL and aVF
    from I and II when the file does not hold them. Padding at either end is cropped; padding
    inside the recording is linearly interpolated.

    Parameters
    ----------
    ds:
        A dataset of any ECG waveform storage class.
    group:
        Its :func:`rhythm_group`, when already known.

    Returns
    -------
    ECG

    Raises
    ------
    InvalidECG
        Everything :func:`rhythm_group` refuses, or too little recording left once padding
        is removed. (Flat leads are the signal-quality gate's: :mod:`ecg2age_dicom.quality`.)
    """
    group = group or rhythm_group(ds)
    raw = _raw_samples(ds, group)
    pad_value = _padding_value(ds, group)
    found_leads = [lead for lead, _, _ in group.leads]
    channels = [channel for _, _, channel in group.leads]
    bits_stored = [channel.bits_stored for channel in channels]
    used = raw[:, [column for _, column, _ in group.leads]]
    padded = used == pad_value if pad_value is not None else None
    if len(set(bits_stored)) == 1:
        used = _sign_extend(used, bits_stored[0])
    else:
        used = np.stack([_sign_extend(used[:, i], b) for i, b in enumerate(bits_stored)], 1)
    gains = np.array([channel.gain_uv for channel in channels], dtype=np.float32)
    offsets = np.array([channel.offset_uv for channel in channels], dtype=np.float32)
    # float32 throughout: int16 x float64 broadcasting takes numpy's slow mixed-type path.
    values = used.astype(np.float32) * gains + offsets
    fs = group.sampling_frequency
    if padded is not None and padded.any():
        values = _fill_padding(values, padded)
        if values.shape[0] / fs < MIN_DURATION_S:
            raise InvalidECG(
                f"recording is {values.shape[0] / fs:.2f} s long once Waveform Padding Value "
                f"samples are removed: at least {MIN_DURATION_S:g} s is needed"
            )

    samples = np.empty((values.shape[0], len(LEADS)), dtype=np.float32)
    samples[:, [LEADS.index(lead) for lead in found_leads]] = values
    derived = tuple(lead for lead in LIMB_LEADS_FROM_I_II if lead not in found_leads)
    if derived:
        limb = derive_limb_leads(samples[:, 0], samples[:, 1])
        for lead in derived:
            samples[:, LEADS.index(lead)] = limb[lead]

    samples.flags.writeable = False
    return ECG(
        samples=samples,
        sampling_frequency=fs,
        leads_found=tuple(found_leads),
        leads_derived=derived,
        group_label=group.label,
        units=tuple(dict.fromkeys(channel.unit for channel in channels)),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
    )


def derive_limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> dict[str, np.ndarray]:
    """III, aVR, aVL and aVF from Einthoven's I and II (Goldberger's augmented leads)."""
    return {
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2.0,
        "aVL": lead_i - lead_ii / 2.0,
        "aVF": lead_ii - lead_i / 2.0,
    }


@lru_cache(maxsize=64)
def antialias_filter(up: int, down: int) -> np.ndarray:
    """scipy's own default resample_poly filter, designed once per ratio instead of per call."""
    max_rate = max(up, down)
    taps = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    return taps.astype(np.float32)  # resample_poly applies the gain of `up` itself


def resample(samples: np.ndarray, from_hz: float, to_hz: float) -> np.ndarray:
    """Polyphase resampling along time (axis 0) with linear edge padding, float32 out.

    ``padtype="line"`` keeps the edges from drooping (the default zero padding makes a flat
    1000 uV signal start at 750 uV). The ratio is the exact fraction to_hz / from_hz for every
    integer rate up to :data:`MAX_SAMPLING_HZ` (a prime rate such as 1999 Hz included), and
    the closest fraction with such a denominator for a non-integer rate.
    """
    ratio = (Fraction(to_hz) / Fraction(from_hz)).limit_denominator(int(MAX_SAMPLING_HZ))
    if ratio == 1:
        return np.asarray(samples, dtype=np.float32)
    up, down = ratio.numerator, ratio.denominator
    by_lead = np.ascontiguousarray(samples.T, dtype=np.float32)  # filter along contiguous rows
    out = resample_poly(
        by_lead, up, down, axis=1, window=antialias_filter(up, down), padtype="line"
    )
    return out.T.astype(np.float32)


def fit_length(samples: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad along time to exactly ``n`` rows, keeping the recording centred."""
    length = samples.shape[0]
    if length >= n:
        start = (length - n) // 2
        return samples[start : start + n]
    before = (n - length) // 2
    return np.pad(samples, ((before, n - length - before), (0, 0)))


def to_model_input(
    ecg: ECG, fs: int = STANDARD_HZ, seconds: float = STANDARD_SECONDS
) -> np.ndarray:
    """The model's input: float32 (fs x seconds, 12) in microvolts, leads in :data:`LEADS` order.

    Length policy: the recording is resampled to ``fs`` with :func:`resample`, then a longer
    recording is cropped to its central ``seconds`` and a shorter one (5 s or more, see
    :func:`decode`) is zero-padded equally on both sides. Training and evaluation of the
    default model use this same function, so the policy is the one the model was trained on.
    """
    target = round(fs * seconds)
    return np.ascontiguousarray(
        fit_length(resample(ecg.samples, ecg.sampling_frequency, fs), target)
    )
