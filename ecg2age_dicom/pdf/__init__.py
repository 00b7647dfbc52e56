"""The viewer-ready report: a one-page PDF (:mod:`.page`) in an Encapsulated PDF instance
(:mod:`.document`) and, optionally, the same page as a Secondary Capture image
(:mod:`.capture`)."""

from ecg2age_dicom.pdf.capture import build_capture
from ecg2age_dicom.pdf.document import build_pdf_document
from ecg2age_dicom.pdf.page import PageResult, render_page

__all__ = ["PageResult", "build_capture", "build_pdf_document", "render_page"]
