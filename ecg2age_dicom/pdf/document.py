"""The Encapsulated PDF instance that carries the report page into the ECG's study.

:func:`build_pdf_document` is pure. The instance (Encapsulated PDF Storage) is in the ECG's
study with the same patient / study attributes as the SR (:func:`~ecg2age_dicom.sr.report.
copied_attributes`), in its own series beside the SR's (Modality DOC, series number 991, one
series per model version and study), references the ECG in Source Instance Sequence, names
the model in its Document Title and Series Description ("not for clinical use" when the
model is not validated for it), and is written in ISO_IR 192.
"""

from __future__ import annotations

import io
from datetime import datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, EncapsulatedPDFStorage, ExplicitVRLittleEndian, generate_uid

from ecg2age_dicom import __version__
from ecg2age_dicom.sr.report import (
    CHARACTER_SET,
    MANUFACTURER,
    SERIES_NUMBER,
    AlgorithmDescription,
    copied_attributes,
    series_uid_for,
)

PDF_SERIES_NUMBER = SERIES_NUMBER + 1  # beside the SR's series


def source_instance(ecg: Dataset) -> Dataset:
    """The Source Instance Sequence item that names the ECG a report object shows."""
    source = Dataset()
    source.ReferencedSOPClassUID = str(ecg.SOPClassUID)
    source.ReferencedSOPInstanceUID = str(ecg.SOPInstanceUID)
    return source


def build_pdf_document(
    ecg: Dataset,
    pdf: bytes,
    algorithm: AlgorithmDescription,
    *,
    sop_instance_uid: str | None = None,
    content_datetime: datetime | None = None,
) -> tuple[str, bytes]:
    """(SOP Instance UID, Part 10 bytes) of the Encapsulated PDF instance for ``pdf``.

    ``ecg`` is the ECG's dataset or header; ``sop_instance_uid`` and ``content_datetime``
    fix what is otherwise new / now.
    """
    uid = sop_instance_uid or generate_uid()
    when = content_datetime or datetime.now()
    research = algorithm.research_suffix
    title = f"ECG age report, {algorithm.name} {algorithm.version}{research}"

    document = Dataset()
    document.SpecificCharacterSet = CHARACTER_SET
    document.SOPClassUID = EncapsulatedPDFStorage
    document.SOPInstanceUID = uid
    for keyword, value in copied_attributes(ecg).items():
        setattr(document, keyword, value)
    document.StudyInstanceUID = str(ecg.StudyInstanceUID)
    document.SeriesInstanceUID = series_uid_for(document.StudyInstanceUID, algorithm, "pdf")
    document.Modality = "DOC"
    document.SeriesNumber = PDF_SERIES_NUMBER
    document.SeriesDescription = f"{algorithm.name} {algorithm.version} ECG age report{research}"[
        :64
    ]
    document.Manufacturer = MANUFACTURER
    document.SoftwareVersions = f"ecg2age-dicom {__version__}"
    document.ConversionType = "SYN"  # made by software, not scanned
    document.InstanceNumber = 1
    document.ContentDate = when.strftime("%Y%m%d")
    document.ContentTime = when.strftime("%H%M%S.%f")
    document.AcquisitionDateTime = ""
    document.BurnedInAnnotation = "YES"  # the page shows the patient's name and ID
    document.DocumentTitle = title[:64]
    document.ConceptNameCodeSequence = []
    document.SourceInstanceSequence = [source_instance(ecg)]
    document.MIMETypeOfEncapsulatedDocument = "application/pdf"
    document.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)  # OB: even length
    document.EncapsulatedDocumentLength = len(pdf)

    document.file_meta = FileMetaDataset()
    document.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    document.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    document.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    document.save_as(buffer, enforce_file_format=True)
    return uid, buffer.getvalue()
