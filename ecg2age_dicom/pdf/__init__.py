"""The viewer-ready report: a one-page PDF (:mod:`.page`, filled from a template by
:mod:`.template`) in an Encapsulated PDF instance
(:mod:`.document`) and, optionally, the same page as a Secondary Capture image
(:mod:`.capture`)."""

from ecg2age_dicom.pdf.capture import build_capture
from ecg2age_dicom.pdf.document import build_pdf_document
from ecg2age_dicom.pdf.page import PageResult
from ecg2age_dicom.pdf.template import render_page

__all__ = ["PageResult", "build_capture", "build_pdf_document", "render_page"]
