"""The ECG-age Structured Report: a TID 1500 Measurement Report built with highdicom.

:func:`build_report` is pure: from the ECG's header attributes and the model's result it
returns a pydicom Dataset, in the ECG's study (same Study Instance UID and patient/study
attributes), in one new series per model version (Modality SR, Series Description naming the
model), with the ECG in Current Requested Procedure Evidence Sequence, TID 4019 algorithm
identification, and the measurements: ECG-predicted age, and when known chronological age and
the age gap (predicted - chronological), all in UCUM years. The model's intended use is a
coded qualitative evaluation plus a text item in the measurement group, and the series and
content descriptions say "not for clinical use" when the model is not validated for it.
Codes: :mod:`ecg2age_dicom.sr.codes`.
"""

from __future__ import annotations

import enum
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import highdicom as hd
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_sequence_item
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from ecg2age_dicom import __version__
from ecg2age_dicom.sr import codes

MANUFACTURER = "ecg2age-dicom"
SERIES_NUMBER = 990  # high, so the report series sorts after the acquisition series
# Patient / study attributes highdicom copies from the evidence; type 2: empty is allowed.
_COPIED_EMPTY_IF_MISSING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_COPIED_IF_PRESENT = ("PatientAge", "IssuerOfPatientID", "StudyDescription")


class SRClass(str, enum.Enum):
    """The SR storage class to write (``[sr] sop_class``)."""

    COMPREHENSIVE = "comprehensive"
    ENHANCED = "enhanced"
    COMPREHENSIVE_3D = "comprehensive3d"


_DOCUMENT = {
    SRClass.COMPREHENSIVE: hd.sr.ComprehensiveSR,
    SRClass.ENHANCED: hd.sr.EnhancedSR,
    SRClass.COMPREHENSIVE_3D: hd.sr.Comprehensive3DSR,
}


@dataclass(frozen=True)
class AlgorithmDescription:
    """What the report says about the model that produced it."""

    name: str
    version: str
    intended_use: str
    validated_for_clinical_use: bool


def _decimal(value: float) -> float:
    # Decimal String values must fit 16 characters: two decimals are plenty for years.
    return round(float(value), 2)


def evidence_header(ecg: Dataset) -> Dataset:
    """The ECG's identity and patient/study attributes, missing type 2 ones filled empty.

    highdicom reads these from the evidence and fails on absent ones; a header without the
    waveform also spares it a deep copy of the samples.
    """
    header = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(header, keyword, ecg.get(keyword))
    for keyword, value in _copied_attributes(ecg).items():
        setattr(header, keyword, value)
    return header


def _copied_attributes(ecg: Dataset) -> dict[str, object]:
    """The patient / study attributes a report takes from its ECG, by keyword: the type 2
    ones empty when the ECG lacks them, the others only when it has them."""
    copied: dict[str, object] = {k: ecg.get(k, "") or "" for k in _COPIED_EMPTY_IF_MISSING}
    copied.update((k, ecg.get(k)) for k in _COPIED_IF_PRESENT if ecg.get(k))
    return copied


def series_uid_for(study_instance_uid: str, algorithm: AlgorithmDescription) -> str:
    """The same report series for every SR of one model version in one study."""
    return generate_uid(entropy_srcs=[study_instance_uid, algorithm.name, algorithm.version])


def build_report_with_highdicom(
    ecg: Dataset,
    algorithm: AlgorithmDescription,
    predicted_age_years: float,
    chronological_age_years: float | None = None,
    *,
    sr_class: SRClass = SRClass.COMPREHENSIVE,
    sop_instance_uid: str | None = None,
    content_datetime: datetime | None = None,
) -> Dataset:
    """Build the SR for one ECG (see the module docstring for its content).

    Parameters
    ----------
    ecg:
        The ECG dataset or its header (waveform not needed).
    algorithm:
        The model's name, version and intended use.
    predicted_age_years, chronological_age_years:
        The model's result and, when the ECG carries it, the patient's age.
    sr_class:
        Comprehensive (default), Enhanced or Comprehensive 3D SR.
    sop_instance_uid, content_datetime:
        Fixed values for reproducible output; new UID / now by default.

    Returns
    -------
    pydicom.dataset.Dataset
        A complete SR instance, with file meta, ready to write or send.

    Notes
    -----
    Every call runs highdicom's IOD checks and deep copies (tens of ms): the service uses
    :func:`build_report`, which fills a copy of a report built here once per model.
    """
    header = evidence_header(ecg)
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version, family=codes.ARTIFICIAL_INTELLIGENCE
    )
    measurements = [
        hd.sr.Measurement(
            codes.PREDICTED_AGE,
            _decimal(predicted_age_years),
            codes.YEARS,
            algorithm_id=algorithm_id,
        ),
    ]
    if chronological_age_years is not None:
        gap = predicted_age_years - chronological_age_years
        measurements += [
            hd.sr.Measurement(
                codes.CHRONOLOGICAL_AGE, _decimal(chronological_age_years), codes.YEARS
            ),
            hd.sr.Measurement(codes.AGE_GAP, _decimal(gap), codes.YEARS, algorithm_id=algorithm_id),
        ]
    use = (
        codes.CLINICALLY_VALIDATED
        if algorithm.validated_for_clinical_use
        else (codes.RESEARCH_ONLY)
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier=f"ECG age {algorithm.name} {algorithm.version}"
        ),
        algorithm_id=algorithm_id,
        measurements=measurements,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(codes.INTENDED_USE, use)],
    )
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=codes.INTENDED_USE,
            value=algorithm.intended_use[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    observer = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DEVICE,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(entropy_srcs=[MANUFACTURER, algorithm.name, algorithm.version]),
                name=f"{algorithm.name} {algorithm.version}"[:64],
                manufacturer_name=MANUFACTURER,
                model_name=algorithm.name[:64],
            ),
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=observer,
        procedure_reported=codes.TWELVE_LEAD_ECG,
        imaging_measurements=[group],
    )
    research = "" if algorithm.validated_for_clinical_use else " - not for clinical use"
    with warnings.catch_warnings():
        # highdicom's person-name warning quotes the patient's name: no PHI in logs.
        warnings.filterwarnings("ignore", message=".*person name.*", category=UserWarning)
        document = _document(
            sr_class, header, report, algorithm, research, sop_instance_uid, content_datetime
        )
    document.CodingSchemeIdentificationSequence = DicomSequence(
        [codes.private_scheme_identification()]
    )
    return document


def _document(
    sr_class: SRClass,
    header: Dataset,
    report: hd.sr.MeasurementReport,
    algorithm: AlgorithmDescription,
    research: str,
    sop_instance_uid: str | None,
    content_datetime: datetime | None,
) -> hd.sr.ComprehensiveSR:
    when = content_datetime or datetime.now()
    return _DOCUMENT[sr_class](
        evidence=[header],
        content=report[0],
        series_instance_uid=series_uid_for(str(header.StudyInstanceUID), algorithm),
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=True,
        series_description=f"{algorithm.name} {algorithm.version} ECG age{research}"[:64],
        software_versions=f"ecg2age-dicom {__version__}",
        content_date=when.date(),
        content_time=when.time(),
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


def _content_paths(dataset: Dataset, prefix: ContentPath = ()):
    for index, item in enumerate(dataset.get("ContentSequence", [])):
        yield (*prefix, index), item
        yield from _content_paths(item, (*prefix, index))


def _encoded_copy(dataset: Dataset) -> Dataset:
    """A new dataset holding the same elements, still encoded: an element is decoded (and
    changed) in the copy only, and the ones never touched are written out as they are."""
    elements = {tag: dataset.get_item(tag) for tag in dataset.keys()}  # noqa: SIM118
    # The same character set as read and as in force: pydicom then writes encoded elements
    # as they are, instead of decoding them all to re-encode.
    charset = dataset.original_character_set
    copy = Dataset(elements, parent_encoding=charset)
    copy.set_original_encoding(*dataset.original_encoding, charset)
    return copy


def _put(dataset: Dataset, keyword: str, value: object) -> None:
    """Set an element without decoding the value it replaces."""
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    dataset.add_new(tag, dictionary_VR(tag), value)


def _encoded_item(item: Dataset) -> bytes:
    """One Sequence item as pydicom encodes it (item tag, length, dataset), Explicit VR LE."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_sequence_item(buffer, item, item.original_character_set or ["iso8859"])
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
    numbers, tracking = [], ()
    for path, item in _content_paths(built):
        concept = item.ConceptNameCodeSequence[0].CodeValue
        if item.ValueType == "NUM":
            numbers.append((path, concept))
        elif item.ValueType == "UIDREF" and concept == _TRACKING_UID:
            tracking = path
    buffer = io.BytesIO()
    built.save_as(buffer, enforce_file_format=True)
    document = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    nodes, encoded_items = {(): document}, {}
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
    item = _encoded_copy(template.nodes[path])
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
            _put(item.MeasuredValueSequence[0], "FloatingPointValue", _decimal(value))
            _put(item.MeasuredValueSequence[0], "NumericValue", _decimal(value))

        return fill

    fill = {path: measured(values[concept]) for path, concept in template.numbers}
    fill[template.tracking_uid] = lambda item: _put(item, "UID", generate_uid())
    document = _filled(template, (), fill)
    document.file_meta = FileMetaDataset(_encoded_copy(template.document.file_meta))
    uid = sop_instance_uid or generate_uid()
    _put(document.file_meta, "MediaStorageSOPInstanceUID", uid)
    _put(document, "SOPInstanceUID", uid)
    study_uid = ecg.StudyInstanceUID
    _put(document, "StudyInstanceUID", study_uid)
    _put(document, "SeriesInstanceUID", series_uid_for(str(study_uid), algorithm))
    for keyword, value in _copied_attributes(ecg).items():
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
