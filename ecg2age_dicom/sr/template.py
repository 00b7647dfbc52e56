"""The fast path: the same report as highdicom builds, encoded in a fraction of a millisecond.

highdicom builds the report once per model version, SR class and with/without chronological
age (:func:`prepare`), for a placeholder ECG whose every per-ECG value is a marker. That
report is encoded once, with every sequence and item of undefined length, so that an element
inside them can change length without any enclosing length changing; the encoding is then
cut around the elements that hold markers. A report (:func:`build_report`) is the stored
bytes with those elements encoded again by pydicom (``write_data_element``) for this ECG:
its UIDs, patient / study attributes (cleaned by :func:`~ecg2age_dicom.sr.report.copied_
attributes`; an optional one the ECG lacks is left out), evidence reference, dates,
values and signal-quality text, and its SOP Instance UID in the File Meta (whose group length
is counted again).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import TwelveLeadECGWaveformStorage, generate_uid

from ecg2age_dicom.dicomfile import FILE_META_ELEMENTS_START, PART10_PREFIX
from ecg2age_dicom.sr import codes
from ecg2age_dicom.sr.report import (
    COPIED_KEYWORDS,
    AlgorithmDescription,
    SRClass,
    build_report_with_highdicom,
    copied_attributes,
    quality_text,
    rounded_years,
    series_uid_for,
)

ENCODINGS = ["utf_8"]  # ISO_IR 192, the report's Specific Character Set
_FILE_META_GROUP_LENGTH = 0x00020000
_MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
_TRACKING_UID = "112040"  # DCM "Tracking Unique Identifier"


@dataclass(frozen=True)
class Report:
    """An encoded report: a DICOM Part 10 file in memory, and its SOP Instance UID."""

    sop_instance_uid: str
    encoded: bytes

    def dataset(self) -> Dataset:
        """The report decoded (for reading back; the service sends :attr:`encoded`)."""
        return pydicom.dcmread(io.BytesIO(self.encoded))


@dataclass(frozen=True)
class _Slot:
    """A per-ECG element of the template: its tag, VR and the name of its value."""

    tag: int
    vr: str
    name: str


@dataclass(frozen=True)
class _Template:
    """The template's encoding cut around its slots: ``pieces[i]``, slot ``i``, ...,
    ``pieces[-1]``; and its File Meta after the group length, cut around the Media Storage
    SOP Instance UID (the one element that differs between reports)."""

    pieces: tuple[bytes, ...]
    slots: tuple[_Slot, ...]
    meta_pieces: tuple[bytes, bytes]


# The per-ECG values of a report: name -> (the keyword of the element that holds it, a
# distinct valid marker). The numbers sit in a NUM item twice: FD and DS (marker + 1000).
_PER_ECG: dict[str, tuple[str, str | float]] = {
    "SOPInstanceUID": ("SOPInstanceUID", "2.25.9001"),
    "StudyInstanceUID": ("StudyInstanceUID", "2.25.9002"),
    "SeriesInstanceUID": ("SeriesInstanceUID", "2.25.9003"),
    # highdicom wants a SOP class it knows; only the evidence holds this tag.
    "ECGSOPClassUID": ("ReferencedSOPClassUID", TwelveLeadECGWaveformStorage),
    "ECGSOPInstanceUID": ("ReferencedSOPInstanceUID", "2.25.9005"),
    "ECGSeriesInstanceUID": ("SeriesInstanceUID", "2.25.9006"),
    "EvidenceStudyInstanceUID": ("StudyInstanceUID", "2.25.9007"),
    "TrackingUID": ("UID", "2.25.9008"),
    "ContentDate": ("ContentDate", "19010101"),
    "InstanceCreationDate": ("InstanceCreationDate", "19020202"),
    "ContentTime": ("ContentTime", "010101.000001"),
    "InstanceCreationTime": ("InstanceCreationTime", "020202.000002"),
    "ContributionDateTime": ("ContributionDateTime", "19030303030303.000003"),
    "PatientName": ("PatientName", "Marker^Name"),
    "PatientID": ("PatientID", "MARKERID"),
    "PatientBirthDate": ("PatientBirthDate", "19040404"),
    "PatientSex": ("PatientSex", "O"),
    "AccessionNumber": ("AccessionNumber", "MARKERACC"),
    "StudyID": ("StudyID", "MARKERSTUDY"),
    "StudyDate": ("StudyDate", "19050505"),
    "StudyTime": ("StudyTime", "050505"),
    "ReferringPhysicianName": ("ReferringPhysicianName", "Marker^Referrer"),
    "PatientAge": ("PatientAge", "099Y"),
    "IssuerOfPatientID": ("IssuerOfPatientID", "MARKERISSUER"),
    "StudyDescription": ("StudyDescription", "MARKER DESCRIPTION"),
    codes.SIGNAL_QUALITY.value: ("TextValue", "MARKER QUALITY"),
    codes.PREDICTED_AGE.value: ("FloatingPointValue", 901.11),
    codes.CHRONOLOGICAL_AGE.value: ("FloatingPointValue", 902.22),
    codes.AGE_GAP.value: ("FloatingPointValue", 903.33),
    codes.CORRECTED_AGE_GAP.value: ("FloatingPointValue", 904.44),
}
_DS_OFFSET = 1000.0  # NumericValue markers: the FD marker + this


def _marker(name: str) -> str | float:
    return _PER_ECG[name][1]


def _content_items(dataset: Dataset) -> Iterator[Dataset]:
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _content_items(item)


def _marked(algorithm: AlgorithmDescription, sr_class: SRClass, with_age: bool) -> Dataset:
    """highdicom's report for a placeholder ECG, every per-ECG value a marker."""
    placeholder = Dataset()
    placeholder.SOPClassUID = _marker("ECGSOPClassUID")
    placeholder.SOPInstanceUID = _marker("ECGSOPInstanceUID")
    placeholder.StudyInstanceUID = _marker("StudyInstanceUID")
    placeholder.SeriesInstanceUID = _marker("ECGSeriesInstanceUID")
    for keyword in COPIED_KEYWORDS:
        setattr(placeholder, keyword, _marker(keyword))
    chronological = _marker(codes.CHRONOLOGICAL_AGE.value)
    document = build_report_with_highdicom(
        placeholder,
        algorithm,
        float(_marker(codes.PREDICTED_AGE.value)),
        float(chronological) if with_age else None,
        sr_class=sr_class,
        sop_instance_uid=str(_marker("SOPInstanceUID")),
        content_datetime=datetime(1901, 1, 1, 1, 1, 1, 1),
    )
    # Values highdicom derives, and the ones that sit inside sequences: set to markers.
    document.SeriesInstanceUID = _marker("SeriesInstanceUID")
    document.InstanceCreationDate = _marker("InstanceCreationDate")
    document.InstanceCreationTime = _marker("InstanceCreationTime")
    equipment = document.ContributingEquipmentSequence[0]
    equipment.ContributionDateTime = _marker("ContributionDateTime")
    document.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID = _marker(
        "EvidenceStudyInstanceUID"
    )
    for item in _content_items(document):
        concept = item.ConceptNameCodeSequence[0].CodeValue
        if item.ValueType == "NUM":
            measured = item.MeasuredValueSequence[0]
            measured.FloatingPointValue = float(_marker(concept))
            measured.NumericValue = f"{float(_marker(concept)) + _DS_OFFSET:.2f}"
        elif item.ValueType == "UIDREF" and concept == _TRACKING_UID:
            item.UID = _marker("TrackingUID")
        elif item.ValueType == "TEXT" and concept == codes.SIGNAL_QUALITY.value:
            item.TextValue = _marker(concept)
    return document


def _undefined_lengths(dataset: Dataset) -> None:
    """Encode every sequence and item of ``dataset`` with undefined length (delimiters)."""
    for element in dataset:
        if element.VR == "SQ":
            element.is_undefined_length = True
            for item in element.value:
                item.is_undefined_length_sequence_item = True
                _undefined_lengths(item)


def _encoded(element: DataElement) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_data_element(buffer, element, ENCODINGS)
    return buffer.getvalue()


def _slots(document: Dataset) -> Iterator[tuple[_Slot, bytes]]:
    """Every element of ``document`` that holds a marker (matched on tag and value), in
    encoding order, with its encoded bytes."""
    wanted: dict[tuple[int, object], str] = {}
    for name, (keyword, value) in _PER_ECG.items():
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        wanted[tag, value] = name
        if isinstance(value, float):
            wanted[tag_for_keyword("NumericValue") or 0, round(value + _DS_OFFSET, 2)] = name

    def walk(dataset: Dataset) -> Iterator[tuple[_Slot, bytes]]:
        for element in dataset:
            if element.VR == "SQ":
                for item in element.value:
                    yield from walk(item)
                continue
            value = element.value
            key = float(value) if element.VR in ("FD", "DS") else str(value)
            name = wanted.get((element.tag, round(key, 2) if isinstance(key, float) else key))
            if name is not None:
                yield _Slot(element.tag, element.VR, name), _encoded(element)

    yield from walk(document)


@lru_cache(maxsize=32)
def _template(algorithm: AlgorithmDescription, sr_class: SRClass, with_age: bool) -> _Template:
    """The cut encoding of a marked report, once per variant."""
    document = _marked(algorithm, sr_class, with_age)
    _undefined_lengths(document)
    buffer = io.BytesIO()
    document.save_as(buffer, enforce_file_format=True)
    encoded = buffer.getvalue()
    meta_length = pydicom.dcmread(io.BytesIO(encoded)).file_meta.FileMetaInformationGroupLength
    end = FILE_META_ELEMENTS_START + meta_length
    meta, body = encoded[FILE_META_ELEMENTS_START:end], encoded[end:]
    uid = _encoded(DataElement(_MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", _marker("SOPInstanceUID")))
    before, after = meta.split(uid)
    pieces, slots, position = [], [], 0
    for slot, element in _slots(document):
        at = body.index(element, position)
        pieces.append(body[position:at])
        slots.append(slot)
        position = at + len(element)
    pieces.append(body[position:])
    return _Template(tuple(pieces), tuple(slots), (before, after))


def prepare(algorithm: AlgorithmDescription, sr_class: SRClass) -> None:
    """Build the templates :func:`build_report` uses now, not on the first ECG (highdicom's
    first build also loads its IOD tables: about a second)."""
    for with_age in (False, True):
        _template(algorithm, sr_class, with_age)


def build_report(
    ecg: Dataset,
    algorithm: AlgorithmDescription,
    predicted_age_years: float,
    chronological_age_years: float | None = None,
    *,
    quality_flags: Sequence[str] = (),
    sr_class: SRClass = SRClass.COMPREHENSIVE,
    sop_instance_uid: str | None = None,
    content_datetime: datetime | None = None,
) -> Report:
    """The same report as :func:`build_report_with_highdicom`, encoded.

    Parameters: as :func:`build_report_with_highdicom` (the tests check both give the same
    report). Returns the encoded report and its SOP Instance UID.
    """
    template = _template(algorithm, sr_class, chronological_age_years is not None)
    uid = sop_instance_uid or generate_uid()
    when = content_datetime or datetime.now()
    study_uid = str(ecg.StudyInstanceUID)
    values: dict[str, object] = {
        "SOPInstanceUID": uid,
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid_for(study_uid, algorithm),
        "ECGSOPClassUID": str(ecg.SOPClassUID),
        "ECGSOPInstanceUID": str(ecg.SOPInstanceUID),
        "ECGSeriesInstanceUID": str(ecg.SeriesInstanceUID),
        "EvidenceStudyInstanceUID": study_uid,
        "TrackingUID": generate_uid(),
        "ContentDate": when.strftime("%Y%m%d"),
        "InstanceCreationDate": when.strftime("%Y%m%d"),
        "ContentTime": when.strftime("%H%M%S.%f"),
        "InstanceCreationTime": when.strftime("%H%M%S.%f"),
        "ContributionDateTime": when.strftime("%Y%m%d%H%M%S.%f"),
        **copied_attributes(ecg),
        codes.SIGNAL_QUALITY.value: quality_text(quality_flags),
        codes.PREDICTED_AGE.value: rounded_years(predicted_age_years),
    }
    if chronological_age_years is not None:
        values[codes.CHRONOLOGICAL_AGE.value] = rounded_years(chronological_age_years)
        gap = predicted_age_years - chronological_age_years
        values[codes.AGE_GAP.value] = rounded_years(gap)
        if algorithm.gap_correction is not None:
            corrected = algorithm.gap_correction.corrected_gap(
                predicted_age_years, chronological_age_years
            )
            values[codes.CORRECTED_AGE_GAP.value] = rounded_years(corrected)
    parts = [template.pieces[0]]
    for slot, piece in zip(template.slots, template.pieces[1:], strict=True):
        value = values.get(slot.name)
        if value is not None:  # an optional attribute the ECG lacks is left out
            parts.append(_encoded(DataElement(slot.tag, slot.vr, value)))
        parts.append(piece)
    before, after = template.meta_pieces
    meta = before + _encoded(DataElement(_MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", uid)) + after
    length = _encoded(DataElement(_FILE_META_GROUP_LENGTH, "UL", len(meta)))
    return Report(uid, PART10_PREFIX + length + meta + b"".join(parts))
