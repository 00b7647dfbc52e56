"""Orthanc as the PACS: the SR, the PDF and the page's image land in the ECG's study (REST API)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    ComprehensiveSRStorage,
    EncapsulatedPDFStorage,
    SecondaryCaptureImageStorage,
)

from tests.peers import free_port, orthanc_config, port_open, storescu, wait_for

SAMPLE = get_testdata_file("waveform_ecg.dcm")


def orthanc_or_skip() -> str:
    binary = shutil.which("Orthanc")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Orthanc is required in CI (make install installs Debian's orthanc)")
        pytest.skip("Orthanc not installed (make install installs Debian's orthanc)")
    return binary


def rest(http_port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=10) as answer:
        return json.load(answer)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_report_object_lands_in_the_ecgs_study_in_orthanc(make_service, processes, tmp_path):
    binary = orthanc_or_skip()
    dicom_port, http_port = free_port(), free_port()
    config = orthanc_config(tmp_path / "orthanc", "PACS", dicom_port, http_port)
    processes.start([binary, str(config)], tmp_path / "orthanc.log")
    wait_for(lambda: port_open(dicom_port) and port_open(http_port), 60, "Orthanc to listen")
    service = make_service(pacs_port=dicom_port, extra='[report]\noutputs = ["sr", "pdf", "sc"]\n')
    service.start()
    assert storescu(service.port, [SAMPLE]).returncode == 0
    wait_for(lambda: len(rest(http_port, "/instances")) == 3, 120, "the reports in Orthanc")
    tags = [
        rest(http_port, f"/instances/{i}/simplified-tags") for i in rest(http_port, "/instances")
    ]
    study = str(pydicom.dcmread(SAMPLE, stop_before_pixels=True).StudyInstanceUID)
    assert {t["SOPClassUID"] for t in tags} == {
        ComprehensiveSRStorage,
        EncapsulatedPDFStorage,
        SecondaryCaptureImageStorage,
    }
    assert {t["StudyInstanceUID"] for t in tags} == {study}
    assert len({t["SeriesInstanceUID"] for t in tags}) == 3  # a series for each kind
    assert service.stop() == 0
