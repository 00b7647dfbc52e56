"""The fast path: the same report as highdicom builds, encoded in a fraction of a millisecond.

highdicom builds the report once per model version, SR class and with/without chronological
age (:func:`prepare`), for a placeholder ECG whose every per-ECG value is a marker; that
report becomes a :class:`~ecg2age_dicom.part10.Template`. A report (:func:`build_report`) is
the template with this ECG's values: its UIDs, patient / study attributes (cleaned by
:func:`~ecg2age_dicom.sr.report.copied_attributes`; an optional one the ECG lacks is left
out), evidence reference, dates, values and signal-quality text, and its SOP Instance UID.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import TwelveLeadECGWaveformStorage, generate_uid

from ecg2age_dicom.part10 import Marker, Template
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

_TRACKING_UID = "112040"  # DCM "Tracking Unique Identifier"


@dataclass(frozen=True)
class Report:
    """An encoded report: a DICOM Part 10 file in memory, and its SOP Instance UID."""

    sop_instance_uid: str
    encoded: bytes

    def dataset(self) -> Dataset:
        """The report decoded (for reading back; the service sends :attr:`encoded`)."""
        return pydicom.dcmread(io.BytesIO(self.encoded))


COPIED_MARKERS = {
    "PatientName": "Marker^Name",
    "PatientID": "MARKERID",
    "PatientBirthDate": "19040404",
    "PatientSex": "O",
    "AccessionNumber": "MARKERACC",
    "StudyID": "MARKERSTUDY",
    "StudyDate": "19050505",
    "StudyTime": "050505",
    "ReferringPhysicianName": "Marker^Referrer",
    "PatientAge": "099Y",
    "IssuerOfPatientID": "MARKERISSUER",
    "StudyDescription": "MARKER DESCRIPTION",
}
"""A distinct valid marker for each of :data:`~ecg2age_dicom.sr.report.COPIED_KEYWORDS`, for
every report object's template."""
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
    **{keyword: (keyword, marker) for keyword, marker in COPIED_MARKERS.items()},
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


def _markers() -> Iterator[Marker]:
    for name, (keyword, value) in _PER_ECG.items():
        yield name, keyword, value
        if isinstance(value, float):  # the NUM item's DS twin
            yield name, "NumericValue", round(value + _DS_OFFSET, 2)


@lru_cache(maxsize=32)
def _template(algorithm: AlgorithmDescription, sr_class: SRClass, with_age: bool) -> Template:
    """The template of a marked report, once per variant."""
    return Template.of(_marked(algorithm, sr_class, with_age), _markers())


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
    uid = sop_instance_uid or generate_uid()
    when = content_datetime or datetime.now()
    study_uid = str(ecg.StudyInstanceUID)
    template = _template(algorithm, sr_class, chronological_age_years is not None)
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
    return Report(uid, template.encode(values))
