"""HTTP beside the DICOM listener: the application (:mod:`.app`), its health checks
(:mod:`.health`) and its server thread (:mod:`.server`)."""

from ecg2age_dicom.web.app import create_app
from ecg2age_dicom.web.health import ServiceState, readiness
from ecg2age_dicom.web.server import WebServer, start_web

__all__ = ["ServiceState", "WebServer", "create_app", "readiness", "start_web"]
