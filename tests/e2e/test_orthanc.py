"""Orthanc as the PACS: the SR, the PDF and the page's image land in the ECG's study (REST API)."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    ComprehensiveSRStorage,
    EncapsulatedPDFStorage,
    SecondaryCaptureImageStorage,
)

from tests.peers import Orthanc, storescu, wait_for

SAMPLE = get_testdata_file("waveform_ecg.dcm")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_report_object_lands_in_the_ecgs_study_in_orthanc(make_service, processes, tmp_path):
    orthanc = Orthanc.start(processes, tmp_path / "orthanc", "PACS")
    service = make_service(
        pacs_port=orthanc.dicom_port, extra='[report]\noutputs = ["sr", "pdf", "sc"]\n'
    )
    service.start()
    assert storescu(service.port, [SAMPLE]).returncode == 0
    wait_for(lambda: len(orthanc.get("/instances")) == 3, 120, "the reports in Orthanc")
    tags = orthanc.tags()
    study = str(pydicom.dcmread(SAMPLE, stop_before_pixels=True).StudyInstanceUID)
    assert {t["SOPClassUID"] for t in tags} == {
        ComprehensiveSRStorage,
        EncapsulatedPDFStorage,
        SecondaryCaptureImageStorage,
    }
    assert {t["StudyInstanceUID"] for t in tags} == {study}
    assert len({t["SeriesInstanceUID"] for t in tags}) == 3  # a series for each kind
    assert service.stop() == 0
