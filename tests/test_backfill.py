"""The backfill's parts that need no PACS: time windows, the pacer, the summary, the checks
at start; and its C-FIND against a hostile source (pynetdicom as the SCP), whose answers are
validated before they reach the database or a log line."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import datetime, time

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, TwelveLeadECGWaveformStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from ecg2age_dicom.backfill import Backfill, Pacer, Summary, next_opening, window_open
from ecg2age_dicom.config import Settings
from ecg2age_dicom.errors import ConfigError
from ecg2age_dicom.net.qr import QueryRetrieve, SourceError, date_range
from ecg2age_dicom.store import open_store
from tests.peers import free_port

NIGHT = [(time(19, 0), time(7, 0))]


@pytest.mark.parametrize(
    ("moment", "inside"),
    [(time(19, 0), True), (time(23, 59), True), (time(3, 0), True), (time(7, 0), False)],
)
def test_a_window_may_run_past_midnight(moment, inside):
    assert window_open(NIGHT, moment) is inside
    assert window_open([], moment)  # no windows: any time
    assert window_open([(time(12, 0), time(13, 0))], moment) is False


def test_the_next_opening_is_today_or_tomorrow():
    assert next_opening(NIGHT, datetime(2026, 12, 3, 8, 30)) == datetime(2026, 12, 3, 19, 0)
    assert next_opening(NIGHT, datetime(2026, 12, 3, 22, 0)) == datetime(2026, 12, 3, 22, 0)
    lunch = [(time(12, 0), time(13, 0))]
    assert next_opening(lunch, datetime(2026, 12, 3, 14, 0)) == datetime(2026, 12, 4, 12, 0)


def test_windows_are_checked_with_the_configuration():
    assert Settings(backfill={"windows": ["19:00-07:00"]}).backfill.parsed_windows() == NIGHT
    for bad in ("7-19", "19:00-19:00", "25:00-07:00", "19:00"):
        with pytest.raises(ValueError, match="window"):
            Settings(backfill={"windows": [bad]})


def test_the_pacer_spaces_starts_evenly_across_threads():
    now = [100.0]
    pacer = Pacer(per_minute=120, clock=lambda: now[0])
    stopping = threading.Event()
    waits = []
    stopping.wait = lambda timeout: waits.append(timeout) or False  # type: ignore[method-assign]
    for _ in range(4):
        assert pacer.wait(stopping)
    assert waits == [0.0, 0.5, 1.0, 1.5]  # started at once, each booked half a second later


def test_the_summary_says_what_is_left_and_why_items_were_refused():
    summary = Summary(
        found=10,
        retrieved_now=6,
        scored=5,
        already_done=2,
        refused=Counter({"no QRS rhythm": 1}),
        pending=2,
    )
    text = "\n".join(summary.lines())
    assert "not retrieved         2  yet: run the same command to resume" in text
    assert "1  no QRS rhythm" in text and not summary.complete
    assert Summary(found=1, scored=1).complete


def test_date_ranges_match_as_dicom_ranges():
    assert date_range("20240101", "20240131") == "20240101-20240131"
    assert date_range("20240101", None) == "20240101-"
    assert date_range(None, None) == ""


def test_a_move_source_the_listener_would_refuse_is_a_configuration_error(tmp_path):
    settings = Settings(
        listener={"allowed_calling_ae_titles": ["CART1"]},
        storage={"database_url": f"sqlite:///{tmp_path / 'db.sqlite3'}"},
        sources=[{"name": "ARCHIVE", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 1}],
    )
    refused = pytest.raises(ConfigError, match="allowed_calling_ae_titles refuses")
    with open_store(settings.storage.database_url) as sessions, refused:
        Backfill(settings, settings.source("ARCHIVE"), sessions)
    with pytest.raises(ConfigError, match="no \\[\\[sources\\]\\] entry is named 'PACS'"):
        settings.source("PACS")


class HostileSource:
    """A C-FIND SCP answering each level with what ``answers`` holds; records the queries."""

    def __init__(self, answers: dict[str, list[Dataset]], refuse_modalities: bool = False):
        self.answers = answers
        self.refuse_modalities = refuse_modalities
        self.queries: list[Dataset] = []
        self.port = free_port()
        ae = AE("HOSTILE")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_FIND, self.find)]
        )

    def find(self, event):
        query = event.identifier
        self.queries.append(query)
        if self.refuse_modalities and "ModalitiesInStudy" in query:
            yield 0xC000, None
            return
        for match in self.answers.get(query.QueryRetrieveLevel, []):
            yield 0xFF00, match
        yield 0x0000, None


def _match(**values: object) -> Dataset:
    match = Dataset()
    for keyword, value in values.items():
        setattr(match, keyword, value)
    return match


def _source(port: int):
    settings = Settings(
        sources=[{"name": "ARCHIVE", "ae_title": "HOSTILE", "host": "127.0.0.1", "port": port}]
    )
    return QueryRetrieve("ECG2AGE", settings.source("ARCHIVE"), settings.delivery)


def test_a_hostile_sources_uids_and_dates_are_checked_before_use(caplog):
    good_study, good_series, good_sop = generate_uid(), generate_uid(), generate_uid()
    source = HostileSource(
        {
            "STUDY": [
                _match(StudyInstanceUID=good_study, StudyDate="2024-01-02"),
                _match(StudyInstanceUID="../../etc/passwd", StudyDate="20240102"),
                _match(StudyInstanceUID="1.2.3\nforged line", StudyDate="20240102"),
                _match(StudyInstanceUID=generate_uid(), ModalitiesInStudy=["CT", "MR"]),
            ],
            "SERIES": [
                _match(SeriesInstanceUID=good_series, Modality="ECG"),
                _match(SeriesInstanceUID=generate_uid(), Modality="CT"),  # Modality ignored
            ],
            "IMAGE": [
                _match(SOPInstanceUID=good_sop, SOPClassUID=TwelveLeadECGWaveformStorage),
                _match(SOPInstanceUID=generate_uid(), SOPClassUID=CTImageStorage),
                _match(SOPInstanceUID="1.2.abc", SOPClassUID=TwelveLeadECGWaveformStorage),
            ],
        }
    )
    try:
        with caplog.at_level(logging.WARNING), _source(source.port) as query:
            studies = list(query.studies("20240101", "20240131"))
            assert [s.study_instance_uid for s in studies] == [good_study]
            assert studies[0].study_date == ""  # not a DA
            found = query.ecg_instances(studies[0])
    finally:
        source.server.shutdown()
    assert [(f.sop_instance_uid, f.series_instance_uid) for f in found] == [(good_sop, good_series)]
    assert source.queries[0].StudyDate == "20240101-20240131"
    assert source.queries[0].ModalitiesInStudy == "ECG"
    assert "forged line" not in caplog.text.replace("\\nforged line", "")
    assert "invalid StudyInstanceUID" in caplog.text


def test_a_source_that_refuses_modalities_in_study_is_asked_for_every_study():
    study = generate_uid()
    source = HostileSource({"STUDY": [_match(StudyInstanceUID=study)]}, refuse_modalities=True)
    try:
        with _source(source.port) as query:
            assert [s.study_instance_uid for s in query.studies(None, None)] == [study]
    finally:
        source.server.shutdown()
    assert "ModalitiesInStudy" in source.queries[0]
    assert "ModalitiesInStudy" not in source.queries[1]


def test_a_source_that_cannot_be_reached_stops_the_backfill_with_its_reason():
    with (
        _source(free_port()) as query,
        pytest.raises(SourceError, match="ARCHIVE: association to HOSTILE@127"),
    ):
        list(query.studies(None, None))


def test_a_move_backfill_without_the_service_listening_says_to_start_it(tmp_path):
    settings = Settings(
        listener={"port": free_port()},
        storage={"database_url": f"sqlite:///{tmp_path / 'db.sqlite3'}"},
        sources=[{"name": "ARCHIVE", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 1}],
    )
    with open_store(settings.storage.database_url) as sessions:
        backfill = Backfill(settings, settings.source("ARCHIVE"), sessions)
        with pytest.raises(ConfigError, match="start `ecg2age-dicom serve` first"):
            backfill.run()


def test_a_listing_that_fails_midway_stops_the_backfill_instead_of_calling_it_complete(
    tmp_path, monkeypatch
):
    source = HostileSource({"STUDY": [_match(StudyInstanceUID=generate_uid())]})
    settings = Settings(
        storage={
            "database_url": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "spool_dir": str(tmp_path / "spool"),
        },
        sources=[
            {
                "name": "ARCHIVE",
                "ae_title": "HOSTILE",
                "host": "127.0.0.1",
                "port": source.port,
                "retrieve": "get",
            }
        ],
    )

    def broken(*_: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("ecg2age_dicom.store.backfill.record_study", broken)
    try:
        with open_store(settings.storage.database_url) as sessions:
            summary = Backfill(settings, settings.source("ARCHIVE"), sessions).run()
    finally:
        source.server.shutdown()
    assert summary.stopped_by == "listing failed: RuntimeError: disk full"
    assert not summary.complete
