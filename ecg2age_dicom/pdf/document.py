"""The Encapsulated PDF instance that carries the report page into the ECG's study.

:func:`build_pdf_dataset` and :func:`build_pdf_document` (the same instance, encoded from a
:class:`~ecg2age_dicom.part10.Template` made once per model) are pure. The instance
(Encapsulated PDF Storage) is in the ECG's study with the same patient / study attributes as
the SR (:func:`~ecg2age_dicom.sr.report.copied_attributes`), in its own series beside the
SR's (Modality DOC, series number 991, one series per model version and study), references
the ECG in Source Instance Sequence, names the model in its Document Title and Series
Description ("not for clinical use" when the model is not validated for it), and is written
in ISO_IR 192."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, EncapsulatedPDFStorage, ExplicitVRLittleEndian, generate_uid

from ecg2age_dicom import __version__
from ecg2age_dicom.part10 import Template
from ecg2age_dicom.sr.report import (
    CHARACTER_SET,
    COPIED_KEYWORDS,
    MANUFACTURER,
    SERIES_NUMBER,
    AlgorithmDescription,
    copied_attributes,
    series_uid_for,
)
from ecg2age_dicom.sr.template import COPIED_MARKERS

PDF_SERIES_NUMBER = SERIES_NUMBER + 1  # beside the SR's series


def source_instance(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    """The Source Instance Sequence item that names the ECG a report object shows."""
    source = Dataset()
    source.ReferencedSOPClassUID = sop_class_uid
    source.ReferencedSOPInstanceUID = sop_instance_uid
    return source


def _values(
    ecg: Dataset,
    pdf: bytes,
    algorithm: AlgorithmDescription,
    sop_instance_uid: str | None,
    content_datetime: datetime | None,
) -> dict[str, object]:
    """The instance's values that differ between ECGs, by name (see :data:`_MARKERS`)."""
    when = content_datetime or datetime.now()
    study_uid = str(ecg.StudyInstanceUID)
    return {
        "SOPInstanceUID": sop_instance_uid or generate_uid(),
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid_for(study_uid, algorithm, "pdf"),
        "ECGSOPClassUID": str(ecg.SOPClassUID),
        "ECGSOPInstanceUID": str(ecg.SOPInstanceUID),
        "ContentDate": when.strftime("%Y%m%d"),
        "ContentTime": when.strftime("%H%M%S.%f"),
        **copied_attributes(ecg),
        "EncapsulatedDocument": pdf + b"\0" * (len(pdf) % 2),  # OB: even length
        "EncapsulatedDocumentLength": len(pdf),
    }


def _dataset(values: Mapping[str, object], algorithm: AlgorithmDescription) -> Dataset:
    research = algorithm.research_suffix
    title = f"ECG age report, {algorithm.name} {algorithm.version}{research}"
    document = Dataset()
    document.SpecificCharacterSet = CHARACTER_SET
    document.SOPClassUID = EncapsulatedPDFStorage
    document.SOPInstanceUID = values["SOPInstanceUID"]
    for keyword in COPIED_KEYWORDS:
        if keyword in values:
            setattr(document, keyword, values[keyword])
    document.StudyInstanceUID = values["StudyInstanceUID"]
    document.SeriesInstanceUID = values["SeriesInstanceUID"]
    document.Modality = "DOC"
    document.SeriesNumber = PDF_SERIES_NUMBER
    document.SeriesDescription = f"{algorithm.name} {algorithm.version} ECG age report{research}"[
        :64
    ]
    document.Manufacturer = MANUFACTURER
    document.SoftwareVersions = f"ecg2age-dicom {__version__}"
    document.ConversionType = "SYN"  # made by software, not scanned
    document.InstanceNumber = 1
    document.ContentDate = values["ContentDate"]
    document.ContentTime = values["ContentTime"]
    document.AcquisitionDateTime = ""
    document.BurnedInAnnotation = "YES"  # the page shows the patient's name and ID
    document.DocumentTitle = title[:64]
    document.ConceptNameCodeSequence = []
    document.SourceInstanceSequence = [
        source_instance(str(values["ECGSOPClassUID"]), str(values["ECGSOPInstanceUID"]))
    ]
    document.MIMETypeOfEncapsulatedDocument = "application/pdf"
    document.EncapsulatedDocument = values["EncapsulatedDocument"]
    document.EncapsulatedDocumentLength = values["EncapsulatedDocumentLength"]

    document.file_meta = FileMetaDataset()
    document.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    document.file_meta.MediaStorageSOPInstanceUID = UID(str(values["SOPInstanceUID"]))
    document.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return document


# The per-ECG values: name -> (the keyword of the element that holds it, a distinct marker).
_MARKERS: dict[str, tuple[str, object]] = {
    "SOPInstanceUID": ("SOPInstanceUID", "2.25.9101"),
    "StudyInstanceUID": ("StudyInstanceUID", "2.25.9102"),
    "SeriesInstanceUID": ("SeriesInstanceUID", "2.25.9103"),
    "ECGSOPClassUID": ("ReferencedSOPClassUID", "2.25.9104"),
    "ECGSOPInstanceUID": ("ReferencedSOPInstanceUID", "2.25.9105"),
    "ContentDate": ("ContentDate", "19010101"),
    "ContentTime": ("ContentTime", "010101.000001"),
    **{keyword: (keyword, marker) for keyword, marker in COPIED_MARKERS.items()},
    "EncapsulatedDocument": ("EncapsulatedDocument", b"%PDF-marker\n"),
    "EncapsulatedDocumentLength": ("EncapsulatedDocumentLength", 9999),
}


@lru_cache(maxsize=8)
def _template(algorithm: AlgorithmDescription) -> Template:
    marked = _dataset({name: marker for name, (_, marker) in _MARKERS.items()}, algorithm)
    return Template.of(marked, [(name, *held) for name, held in _MARKERS.items()])


def prepare(algorithm: AlgorithmDescription) -> None:
    """Make the instance's template now, not on the first ECG."""
    _template(algorithm)


def build_pdf_dataset(
    ecg: Dataset,
    pdf: bytes,
    algorithm: AlgorithmDescription,
    *,
    sop_instance_uid: str | None = None,
    content_datetime: datetime | None = None,
) -> Dataset:
    """The Encapsulated PDF instance for ``pdf`` as a pydicom Dataset.

    ``ecg`` is the ECG's dataset or header; ``sop_instance_uid`` and ``content_datetime``
    fix what is otherwise new / now.
    """
    values = _values(ecg, pdf, algorithm, sop_instance_uid, content_datetime)
    return _dataset(values, algorithm)


def build_pdf_document(
    ecg: Dataset,
    pdf: bytes,
    algorithm: AlgorithmDescription,
    *,
    sop_instance_uid: str | None = None,
    content_datetime: datetime | None = None,
) -> tuple[str, bytes]:
    """(SOP Instance UID, Part 10 bytes) of :func:`build_pdf_dataset`'s instance, encoded
    from a template (the tests check both give the same instance)."""
    values = _values(ecg, pdf, algorithm, sop_instance_uid, content_datetime)
    return str(values["SOPInstanceUID"]), _template(algorithm).encode(values)
