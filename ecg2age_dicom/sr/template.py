"""The fast path: the same report as highdicom builds, in about a millisecond.

highdicom builds the report once per model version, SR class and with/without chronological
age (:func:`prepare`); each ECG gets a copy (:func:`build_report`) with its own UIDs,
patient / study attributes, evidence reference, dates and values, in which only those
elements are decoded and only the content items holding them re-encoded.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_sequence_item
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from ecg2age_dicom.dicomfile import encoded_copy
from ecg2age_dicom.sr import codes
from ecg2age_dicom.sr.report import (
    AlgorithmDescription,
    SRClass,
    build_report_with_highdicom,
    copied_attributes,
    rounded_years,
    series_uid_for,
)

_PLACEHOLDER_ECG_UIDS = ("1.2.840.10008.5.1.4.1.1.9.1.1", "2.25.1", "2.25.2", "2.25.3")
_TRACKING_UID = "112040"  # DCM "Tracking Unique Identifier"
CONTENT_SEQUENCE = Tag(0x0040A730)


ContentPath = tuple[int, ...]  # indexes down the content tree; () is the document itself


@dataclass(frozen=True)
class _Template:
    """A report read back from its encoding, and where its per-ECG values sit.

    ``document`` is never changed after it is made: along the paths to the per-ECG values
    its Content Sequences are decoded once (``nodes``), and ``encoded_items`` holds each of
    those sequences' items as encoded bytes, so that a report re-encodes only the items on
    those paths and copies the rest as they are.
    """

    document: Dataset
    numbers: tuple[tuple[ContentPath, str], ...]  # (path, concept code value)
    tracking_uid: ContentPath
    nodes: dict[ContentPath, Dataset]
    encoded_items: dict[ContentPath, tuple[bytes, ...]]


def _content_paths(
    dataset: Dataset, prefix: ContentPath = ()
) -> Iterator[tuple[ContentPath, Dataset]]:
    for index, item in enumerate(dataset.get("ContentSequence", [])):
        yield (*prefix, index), item
        yield from _content_paths(item, (*prefix, index))


def _put(dataset: Dataset, keyword: str, value: object) -> None:
    """Set an element without decoding the value it replaces."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    dataset.add_new(tag, dictionary_VR(tag), value)


def _encoded_item(item: Dataset) -> bytes:
    """One Sequence item as pydicom encodes it (item tag, length, dataset), Explicit VR LE."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    charset = item.original_character_set or "iso8859"
    write_sequence_item(buffer, item, [charset] if isinstance(charset, str) else list(charset))
    return buffer.getvalue()


@lru_cache(maxsize=32)
def _template(algorithm: AlgorithmDescription, sr_class: SRClass, with_age: bool) -> _Template:
    """A report built by highdicom for a placeholder ECG, once per variant."""
    placeholder = Dataset()
    for keyword, uid in zip(
        ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"),
        _PLACEHOLDER_ECG_UIDS,
        strict=True,
    ):
        setattr(placeholder, keyword, uid)
    built = build_report_with_highdicom(
        placeholder, algorithm, 0.0, 0.0 if with_age else None, sr_class=sr_class
    )
    numbers: list[tuple[ContentPath, str]] = []
    tracking: ContentPath = ()
    for path, item in _content_paths(built):
        concept = item.ConceptNameCodeSequence[0].CodeValue
        if item.ValueType == "NUM":
            numbers.append((path, concept))
        elif item.ValueType == "UIDREF" and concept == _TRACKING_UID:
            tracking = path
    buffer = io.BytesIO()
    built.save_as(buffer, enforce_file_format=True)
    document = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    nodes: dict[ContentPath, Dataset] = {(): document}
    encoded_items: dict[ContentPath, tuple[bytes, ...]] = {}
    for leaf in [path for path, _ in numbers] + [tracking]:
        for depth in range(1, len(leaf) + 1):
            parent, path = leaf[: depth - 1], leaf[:depth]
            if parent not in encoded_items:
                encoded_items[parent] = tuple(map(_encoded_item, nodes[parent].ContentSequence))
            nodes[path] = nodes[parent].ContentSequence[path[-1]]
    return _Template(document, tuple(numbers), tracking, nodes, encoded_items)


def _filled(
    template: _Template, path: ContentPath, fill: dict[ContentPath, Callable[[Dataset], None]]
) -> Dataset:
    """A copy of the template's content item at ``path`` with the per-ECG values set in it
    and below: items on the way to a value are rebuilt, the others copied encoded."""
    item = encoded_copy(template.nodes[path])
    if path in fill:
        fill[path](item)
    if path in template.encoded_items:
        encoded = list(template.encoded_items[path])
        for child in (p for p in template.nodes if len(p) == len(path) + 1 and p[:-1] == path):
            encoded[child[-1]] = _encoded_item(_filled(template, child, fill))
        value = b"".join(encoded)  # a defined-length sequence is its items, one after another
        item[CONTENT_SEQUENCE] = RawDataElement(
            CONTENT_SEQUENCE, "SQ", len(value), value, 0, False, True
        )
    return item


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
    sr_class: SRClass = SRClass.COMPREHENSIVE,
    sop_instance_uid: str | None = None,
    content_datetime: datetime | None = None,
) -> Dataset:
    """The same report as :func:`build_report_with_highdicom`, in about a millisecond.

    highdicom builds the report once per model version, SR class and with/without
    chronological age; each ECG gets a copy with its own UIDs, patient / study attributes,
    evidence reference, dates and values, in which only those elements are decoded and only
    the content items holding them re-encoded. Parameters, return value: as
    :func:`build_report_with_highdicom` (the tests check both give the same report).
    """
    template = _template(algorithm, sr_class, chronological_age_years is not None)
    values = {codes.PREDICTED_AGE.value: predicted_age_years}
    if chronological_age_years is not None:
        values[codes.CHRONOLOGICAL_AGE.value] = chronological_age_years
        values[codes.AGE_GAP.value] = predicted_age_years - chronological_age_years

    def measured(value: float) -> Callable[[Dataset], None]:
        def fill(item: Dataset) -> None:
            _put(item.MeasuredValueSequence[0], "FloatingPointValue", rounded_years(value))
            _put(item.MeasuredValueSequence[0], "NumericValue", rounded_years(value))

        return fill

    fill = {path: measured(values[concept]) for path, concept in template.numbers}
    fill[template.tracking_uid] = lambda item: _put(item, "UID", generate_uid())
    document = _filled(template, (), fill)
    document.file_meta = FileMetaDataset(encoded_copy(template.document.file_meta))
    uid = sop_instance_uid or generate_uid()
    _put(document.file_meta, "MediaStorageSOPInstanceUID", uid)
    _put(document, "SOPInstanceUID", uid)
    study_uid = ecg.StudyInstanceUID
    _put(document, "StudyInstanceUID", study_uid)
    _put(document, "SeriesInstanceUID", series_uid_for(str(study_uid), algorithm))
    for keyword, value in copied_attributes(ecg).items():
        _put(document, keyword, value)
    when = content_datetime or datetime.now()
    for keyword, value in (
        ("ContentDate", when.strftime("%Y%m%d")),
        ("InstanceCreationDate", when.strftime("%Y%m%d")),
        ("ContentTime", when.strftime("%H%M%S.%f")),
        ("InstanceCreationTime", when.strftime("%H%M%S.%f")),
    ):
        _put(document, keyword, value)
    equipment = document.ContributingEquipmentSequence[0]
    _put(equipment, "ContributionDateTime", when.strftime("%Y%m%d%H%M%S.%f"))
    evidence = document.CurrentRequestedProcedureEvidenceSequence[0]
    _put(evidence, "StudyInstanceUID", study_uid)
    series = evidence.ReferencedSeriesSequence[0]
    _put(series, "SeriesInstanceUID", ecg.SeriesInstanceUID)
    _put(series.ReferencedSOPSequence[0], "ReferencedSOPClassUID", ecg.SOPClassUID)
    _put(series.ReferencedSOPSequence[0], "ReferencedSOPInstanceUID", ecg.SOPInstanceUID)
    return document
