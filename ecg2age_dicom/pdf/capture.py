"""The report page as a Secondary Capture image, for viewers that show neither SR nor PDF.

:func:`build_capture` is pure: it rasterises the page (the PDF of :func:`~ecg2age_dicom.pdf.
render_page`) with PDFium (pypdfium2) at :data:`DPI` dots per inch, RGB, and wraps it in a
Secondary Capture Image (highdicom's :class:`~highdicom.sc.SCImage`) in the ECG's study, in
its own series beside the SR's and the PDF's (Modality OT, series number 992, one series per
model version and study), with the SR's patient / study attributes (cleaned to their VR),
the ECG in Source Instance Sequence, Burned In Annotation YES (the page shows the patient's
name and ID), the model in Series and Derivation Description ("not for clinical use" when
the model is not validated for it), ISO_IR 192, uncompressed (Explicit VR Little Endian:
every viewer shows it; about 6.5 MB for an A4 page at 150 dpi). The page keeps its scale:
Nominal Scanned Pixel Spacing says how many millimetres a pixel is.
"""

from __future__ import annotations

import io
import threading
from datetime import datetime

import highdicom as hd
import numpy as np
import pypdfium2
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ecg2age_dicom import __version__
from ecg2age_dicom.pdf.document import source_instance
from ecg2age_dicom.sr.report import (
    CHARACTER_SET,
    MANUFACTURER,
    SERIES_NUMBER,
    AlgorithmDescription,
    evidence_header,
    person_name_warnings_ignored,
    series_uid_for,
)

DPI = 150
CAPTURE_SERIES_NUMBER = SERIES_NUMBER + 2  # after the SR's and the PDF's
POINTS_PER_INCH = 72.0  # the PDF's own unit
_PDFIUM = threading.Lock()  # PDFium is not thread-safe (pypdfium2's documentation)


def rasterise(pdf: bytes, dpi: int = DPI) -> np.ndarray:
    """The first page of ``pdf`` as (rows, columns, 3) uint8 RGB, at ``dpi``."""
    with _PDFIUM:
        document = pypdfium2.PdfDocument(pdf)
        try:
            bitmap = document[0].render(scale=dpi / POINTS_PER_INCH, rev_byteorder=True)
            return np.array(bitmap.to_numpy(), copy=True)  # out of PDFium's buffer
        finally:
            document.close()


def build_capture(
    ecg: Dataset,
    pdf: bytes,
    algorithm: AlgorithmDescription,
    *,
    sop_instance_uid: str | None = None,
    content_datetime: datetime | None = None,
) -> tuple[str, bytes]:
    """(SOP Instance UID, Part 10 bytes) of the Secondary Capture image of the page ``pdf``.

    ``ecg`` is the ECG's dataset or header; ``sop_instance_uid`` and ``content_datetime``
    fix what is otherwise new / now.
    """
    uid = sop_instance_uid or generate_uid()
    when = content_datetime or datetime.now()
    research = algorithm.research_suffix
    header = evidence_header(ecg)
    with person_name_warnings_ignored():
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=header,
            pixel_array=rasterise(pdf),
            photometric_interpretation="RGB",
            bits_allocated=8,
            # highdicom asks for a coordinate system and an orientation; a page has none in the
            # patient: Patient Orientation (type 2) is emptied below.
            coordinate_system="PATIENT",
            patient_orientation=("L", "F"),
            series_instance_uid=series_uid_for(header.StudyInstanceUID, algorithm, "sc"),
            series_number=CAPTURE_SERIES_NUMBER,
            sop_instance_uid=uid,
            instance_number=1,
            manufacturer=MANUFACTURER,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            specific_character_set=CHARACTER_SET,
            series_description=f"{algorithm.name} {algorithm.version} ECG age page{research}"[:64],
            software_versions=f"ecg2age-dicom {__version__}",
            content_date=when.date(),
            content_time=when.time(),
        )
    image.PatientOrientation = []  # type 2: empty
    image.ImageLaterality = "U"  # the heart is unpaired (else Laterality would be asked for)
    image.ConversionType = "SYN"  # drawn by software, not captured from a screen
    image.BurnedInAnnotation = "YES"
    millimetres = 25.4 / DPI
    image.NominalScannedPixelSpacing = [f"{millimetres:.6f}", f"{millimetres:.6f}"]
    image.DerivationDescription = (
        f"ECG age report page of {algorithm.name} {algorithm.version}{research}"
    )[:1024]
    image.SourceInstanceSequence = [source_instance(str(ecg.SOPClassUID), str(ecg.SOPInstanceUID))]
    buffer = io.BytesIO()
    image.save_as(buffer, enforce_file_format=True)
    return uid, buffer.getvalue()
