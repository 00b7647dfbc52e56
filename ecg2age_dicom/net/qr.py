"""Query/Retrieve SCU for ``backfill``: finding a source's ECGs (C-FIND, Study Root) and
retrieving them one instance at a time (C-MOVE to this service's listener, or C-GET).

=====================  =========================================================================
step                   identifier (Study Root)
=====================  =========================================================================
studies                STUDY: Study Date in the range, Modalities in Study ``ECG``; a source
                       that refuses that key is asked again without it
ECG series             SERIES of a study: Modality ``ECG``
ECG instances          IMAGE of a series: SOP Class UID returned, kept if it is scored
retrieve               IMAGE: the instance's Study, Series and SOP Instance UIDs
=====================  =========================================================================

Everything a source answers is untrusted: UIDs are checked (:func:`~ecg2age_dicom.identity.
is_valid_uid`) before they reach the database or a log line, a study date must be a DA, and
a source that sends more matches than :data:`MAX_MATCHES` for one query is cut off. Every wait
has the ``[delivery]`` timeouts. With C-GET, the instances arrive on the query's association
and go through the same :class:`~ecg2age_dicom.receive.Receiver` as the listener's, size
guard included.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from pynetdicom.status import STATUS_PENDING, STATUS_SUCCESS, STATUS_WARNING, code_to_category

from ecg2age_dicom.config import DeliverySettings, Source
from ecg2age_dicom.errors import Ecg2AgeError
from ecg2age_dicom.identity import SCORED_SOP_CLASSES, is_valid_uid, shown
from ecg2age_dicom.net.scp import storage_handlers
from ecg2age_dicom.net.scu import associate
from ecg2age_dicom.receive import Receiver
from ecg2age_dicom.store.backfill import Found

log = logging.getLogger(__name__)

MAX_MATCHES = 100_000
"""Matches taken from one C-FIND; a source sending more is cut off (split the date range)."""
MOVE_DESTINATION_UNKNOWN = 0xA801
_DATE = re.compile(r"\d{8}")


class SourceError(Ecg2AgeError):
    """The source cannot be reached, refuses us, or cannot send to us: the backfill stops."""


@dataclass(frozen=True)
class Study:
    """A study the source listed: its UID (checked) and date (YYYYMMDD or "")."""

    study_instance_uid: str
    study_date: str


def _identifier(level: str, **values: str) -> Dataset:
    """A Study Root identifier at ``level`` (an empty value asks for that attribute)."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in values.items():
        setattr(identifier, keyword, value)
    return identifier


def date_range(since: str | None, until: str | None) -> str:
    """The Study Date matching value for a range of YYYYMMDD dates ("" for any)."""
    if not since and not until:
        return ""
    return f"{since or ''}-{until or ''}"


class QueryRetrieve:
    """One association to a source, for C-FIND and then C-MOVE or C-GET of instances.

    Parameters
    ----------
    ae_title:
        Ours: the calling AE title, and the C-MOVE destination (``[listener] ae_title``).
    source:
        The ``[[sources]]`` entry.
    timeouts:
        ``[delivery]``'s connection, association and DIMSE timeouts.
    receiver:
        For C-GET: where the instances that arrive on this association are checked, spooled
        and recorded (the listener's rules, its size limit included).
    """

    def __init__(
        self,
        ae_title: str,
        source: Source,
        timeouts: DeliverySettings,
        receiver: Receiver | None = None,
    ) -> None:
        self.ae_title = ae_title
        self.source = source
        self.timeouts = timeouts
        self.receiver = receiver
        self._assoc: Association | None = None

    def __enter__(self) -> QueryRetrieve:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._assoc is not None and self._assoc.is_established:
            self._assoc.release()
        self._assoc = None

    def _association(self) -> Association:
        """The open association, opened again if the source closed it.

        Raises
        ------
        SourceError
            The source cannot be reached or refuses the association.
        """
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        models = [
            StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelMove,
        ]
        handlers: list[EventHandlerType] = []
        roles: tuple[str, ...] = ()
        if self.source.retrieve == "get":
            if self.receiver is None:
                raise ValueError("C-GET needs a receiver for the instances it brings")
            models[1] = StudyRootQueryRetrieveInformationModelGet
            handlers, roles = storage_handlers(self.receiver), SCORED_SOP_CLASSES
        assoc = associate(
            self.ae_title, self.source, self.timeouts, models, handlers, scp_roles=roles
        )
        if isinstance(assoc, str):
            raise SourceError(f"source {self.source.name}: {assoc}")
        self._assoc = assoc
        return assoc

    def _find(self, query: Dataset) -> Iterator[Dataset]:
        """The matches of one C-FIND; raises :class:`SourceError` on a failure status."""
        assoc = self._association()
        count = 0
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            code = int(status.Status) if status and "Status" in status else None
            if code is None:
                raise SourceError(
                    f"source {self.source.name}: no answer to C-FIND (a timeout, or it aborted "
                    f"the association: may {self.ae_title} query it?)"
                )
            category = code_to_category(code)
            if category == STATUS_PENDING and identifier is not None:
                count += 1
                if count > MAX_MATCHES:
                    assoc.send_c_cancel(1, query_model=StudyRootQueryRetrieveInformationModelFind)
                    raise SourceError(
                        f"source {self.source.name}: more than {MAX_MATCHES} matches for one "
                        "query: give a shorter --since/--until range"
                    )
                yield identifier
            elif category != STATUS_SUCCESS:
                raise SourceError(
                    f"source {self.source.name}: C-FIND {query.QueryRetrieveLevel} status "
                    f"0x{code:04X}"
                )

    def studies(self, since: str | None, until: str | None) -> Iterator[Study]:
        """The studies in the date range that hold ECGs (Modalities in Study), or every study
        in the range when the source refuses that key (the series query then decides)."""
        query = _identifier(
            "STUDY",
            StudyInstanceUID="",
            StudyDate=date_range(since, until),
            ModalitiesInStudy="ECG",
        )
        try:
            matches = list(self._find(query))
        except SourceError as exc:
            log.info("%s; asking for every study of the range instead", exc.reason)
            del query.ModalitiesInStudy
            matches = list(self._find(query))
        for match in matches:
            uid = _uid(match, "StudyInstanceUID")
            listed = match.get("ModalitiesInStudy") or []
            modalities = [listed] if isinstance(listed, str) else list(listed)
            if uid is None or (modalities and "ECG" not in modalities):
                continue
            date = str(match.get("StudyDate", "") or "")
            yield Study(uid, date if _DATE.fullmatch(date) else "")

    def ecg_instances(self, study: Study) -> list[Found]:
        """The study's instances of a scored SOP class, in its series of Modality ECG."""
        study_uid = study.study_instance_uid
        series_query = _identifier(
            "SERIES",
            StudyInstanceUID=study_uid,
            SeriesInstanceUID="",
            Modality="ECG",
        )
        series = [
            uid
            for match in self._find(series_query)
            if str(match.get("Modality", "ECG")) == "ECG"
            and (uid := _uid(match, "SeriesInstanceUID"))
        ]
        found = []
        for series_uid in series:
            query = _identifier(
                "IMAGE",
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=series_uid,
                SOPInstanceUID="",
                SOPClassUID="",
            )
            for match in self._find(query):
                uid, sop_class = _uid(match, "SOPInstanceUID"), _uid(match, "SOPClassUID")
                if uid and sop_class in SCORED_SOP_CLASSES:
                    found.append(Found(uid, study_uid, series_uid, sop_class, study.study_date))
        return found

    def retrieve(self, item: Found) -> str:
        """C-MOVE the instance to us (``ae_title``) or C-GET it: "" when the source says it
        was sent, else why not.

        Raises
        ------
        SourceError
            The source does not know our AE title as a move destination, or cannot be reached.
        """
        assoc = self._association()
        identifier = _identifier(
            "IMAGE",
            StudyInstanceUID=item.study_instance_uid,
            SeriesInstanceUID=item.series_instance_uid,
            SOPInstanceUID=item.sop_instance_uid,
        )
        if self.source.retrieve == "get":
            responses = assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
        else:
            responses = assoc.send_c_move(
                identifier, self.ae_title, StudyRootQueryRetrieveInformationModelMove
            )
        final: Any = None
        for status, _ in responses:
            final = status
        code = int(final.Status) if final and "Status" in final else None
        if code is None:
            return "no answer to the retrieve request (timeout or aborted)"
        if code == MOVE_DESTINATION_UNKNOWN:
            raise SourceError(
                f"source {self.source.name} does not know the move destination {self.ae_title}: "
                f"add it to the PACS's DICOM nodes (AE title {self.ae_title}, this service's "
                '[listener] host and port), or set retrieve = "get"'
            )
        completed = int(final.get("NumberOfCompletedSuboperations", 0) or 0)
        failed = int(final.get("NumberOfFailedSuboperations", 0) or 0)
        if code_to_category(code) in (STATUS_SUCCESS, STATUS_WARNING) and completed and not failed:
            return ""
        return (
            f"C-{self.source.retrieve.upper()} status 0x{code:04X}: {completed} sent, "
            f"{failed} failed"
        )


def _uid(match: Dataset, keyword: str) -> str | None:
    """A UID the source sent, when it is a valid one (else None, and a log line)."""
    try:
        value = str(match.get(keyword, "") or "").strip("\0 ")
    except (ValueError, TypeError):  # a value pydicom cannot convert
        value = ""
    if is_valid_uid(value):
        return value
    log.warning("source sent an invalid %s (%s): match ignored", keyword, shown(value))
    return None
