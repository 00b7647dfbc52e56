"""The ECG-age Structured Report: a TID 1500 Measurement Report built with highdicom.

:func:`build_report_with_highdicom` is pure: from the ECG's header attributes and the model's
result it returns a pydicom Dataset, in the ECG's study (same Study Instance UID and
patient/study attributes, each cleaned to its VR by :func:`~ecg2age_dicom.vr.clean_value`),
in one new series per model version (Modality SR, Series Description naming the model), with
the ECG in Current Requested Procedure Evidence Sequence, TID 4019 algorithm identification,
and the measurements: ECG-predicted age, and when known chronological age, the age gap
(predicted - chronological) and, when the model card defines a correction, the gap corrected
for age with a text item that says which correction (:class:`~ecg2age_dicom.age.
GapCorrection`), all in UCUM years. The model's intended use is a coded
qualitative evaluation plus a text item in the measurement group, the signal-quality gate's
flags a text item there too (:func:`quality_text`: "none" for a clean recording), and the
series description says "not for clinical use" when the model is not validated for it. Every
report is written in ISO_IR 192 (UTF-8), whatever the ECG's Specific Character Set, so that
names in any script read back as sent. Codes: :mod:`ecg2age_dicom.sr.codes`.
"""

from __future__ import annotations

import contextlib
import enum
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ecg2age_dicom import __version__
from ecg2age_dicom.age import GapCorrection
from ecg2age_dicom.sr import codes
from ecg2age_dicom.vr import clean_value

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
COPIED_KEYWORDS = _COPIED_EMPTY_IF_MISSING + _COPIED_IF_PRESENT
"""Every patient / study attribute a report may take from its ECG."""
CHARACTER_SET = "ISO_IR 192"  # UTF-8: every script a sender's character set can hold


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
    gap_correction: GapCorrection | None = None  # the card's [age_gap]

    @property
    def research_suffix(self) -> str:
        """What every report's title adds for a model not validated for clinical use."""
        return "" if self.validated_for_clinical_use else " - not for clinical use"


def quality_text(flags: Sequence[str]) -> str:
    """The signal-quality text item's value: the flags, or "none"."""
    return "; ".join(flags)[:1024] or "none"


def rounded_years(value: float) -> float:
    """Years with two decimals (Decimal String values must fit 16 characters)."""
    return round(float(value), 2)


def evidence_header(ecg: Dataset) -> Dataset:
    """The ECG's identity and patient/study attributes, missing type 2 ones filled empty.

    highdicom reads these from the evidence and fails on absent ones; a header without the
    waveform also spares it a deep copy of the samples.
    """
    header = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(header, keyword, ecg.get(keyword))
    for keyword, value in copied_attributes(ecg).items():
        setattr(header, keyword, value)
    return header


def copied_attributes(ecg: Dataset) -> dict[str, str]:
    """The patient / study attributes a report takes from its ECG, by keyword, each cleaned
    to its VR: the type 2 ones empty when the ECG lacks them (or holds an invalid value),
    the others only when it has a valid one."""
    cleaned = {k: clean_value(k, ecg.get(k)) for k in COPIED_KEYWORDS}
    copied = {k: cleaned[k] or "" for k in _COPIED_EMPTY_IF_MISSING}
    copied.update((k, value) for k in _COPIED_IF_PRESENT if (value := cleaned[k]))
    return copied


@contextlib.contextmanager
def person_name_warnings_ignored() -> Iterator[None]:
    """highdicom warns of every one-component name (an ID in a name field, "Anonymous") and
    quotes it: not the administrator's concern, and no PHI for the log."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*person name.*", category=UserWarning)
        yield


def series_uid_for(study_instance_uid: str, algorithm: AlgorithmDescription, kind: str = "") -> str:
    """The same report series for every SR (or, with ``kind``, every other report object of
    that kind) of one model version in one study."""
    sources = [study_instance_uid, algorithm.name, algorithm.version] + ([kind] if kind else [])
    return generate_uid(entropy_srcs=sources)


def build_report_with_highdicom(
    ecg: Dataset,
    algorithm: AlgorithmDescription,
    predicted_age_years: float,
    chronological_age_years: float | None = None,
    *,
    quality_flags: Sequence[str] = (),
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
    quality_flags:
        What the signal-quality gate found doubtful (:mod:`ecg2age_dicom.quality`).
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
    :func:`~ecg2age_dicom.sr.template.build_report`, which encodes a report built here once
    per model variant again with each ECG's values.
    """
    header = evidence_header(ecg)
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version, family=codes.ARTIFICIAL_INTELLIGENCE
    )
    measurements = [
        hd.sr.Measurement(
            codes.PREDICTED_AGE,
            rounded_years(predicted_age_years),
            codes.YEARS,
            algorithm_id=algorithm_id,
        ),
    ]
    if chronological_age_years is not None:
        gap = predicted_age_years - chronological_age_years
        measurements += [
            hd.sr.Measurement(
                codes.CHRONOLOGICAL_AGE, rounded_years(chronological_age_years), codes.YEARS
            ),
            hd.sr.Measurement(
                codes.AGE_GAP, rounded_years(gap), codes.YEARS, algorithm_id=algorithm_id
            ),
        ]
        correction = algorithm.gap_correction
        if correction is not None:
            corrected = correction.corrected_gap(predicted_age_years, chronological_age_years)
            measurements.append(
                hd.sr.Measurement(
                    codes.CORRECTED_AGE_GAP,
                    rounded_years(corrected),
                    codes.YEARS,
                    algorithm_id=algorithm_id,
                )
            )
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
    if chronological_age_years is not None and algorithm.gap_correction is not None:
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=codes.AGE_GAP_CORRECTION,
                value=algorithm.gap_correction.description[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=codes.SIGNAL_QUALITY,
            value=quality_text(quality_flags),
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
    with person_name_warnings_ignored():
        document = _document(
            sr_class, header, report, algorithm, sop_instance_uid, content_datetime
        )
    return document


def _document(
    sr_class: SRClass,
    header: Dataset,
    report: hd.sr.MeasurementReport,
    algorithm: AlgorithmDescription,
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
        series_description=(
            f"{algorithm.name} {algorithm.version} ECG age{algorithm.research_suffix}"[:64]
        ),
        software_versions=f"ecg2age-dicom {__version__}",
        content_date=when.date(),
        content_time=when.time(),
        specific_character_set=CHARACTER_SET,
        coding_schemes=[codes.PRIVATE_SCHEME_IDENTIFICATION],
    )
