"""The one place that knows the order of the stages.

    spool file + "received" row
      -> claim a batch (store) -> read + decode (waveform) -> predict the batch (model)
      -> build each SR (sr) -> write it to the spool -> prediction, report and one delivery
         per destination in one transaction (store)

A decoding failure marks the row "failed" with its reason and moves the file to quarantine.
The same SOP Instance UID is never predicted twice by the same model version: received rows
are unique per UID, and a row that already has this model's prediction is not predicted
again. A restart resumes every row that is not final (claims of a dead worker are requeued
after ``claim_timeout``).
"""

from __future__ import annotations

import enum
import logging
import multiprocessing
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom import sr, waveform
from ecg2age_dicom.age import chronological_age
from ecg2age_dicom.config import SEND_BACK_TO_SENDER, Destination
from ecg2age_dicom.dicomfile import (
    dataset_bytes,
    read_dataset,
    read_dataset_bytes,
    write_atomically,
)
from ecg2age_dicom.errors import InvalidECG
from ecg2age_dicom.model import ModelCard, ModelRuntime
from ecg2age_dicom.store import queries
from ecg2age_dicom.store.models import InstanceStatus, Prediction, ReceivedInstance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spool:
    """The spool's folders: received ECGs, quarantined ones, and produced SRs."""

    root: Path

    @property
    def received(self) -> Path:
        return self.root / "received"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def reports(self) -> Path:
        return self.root / "sr"

    def received_path(self, sop_instance_uid: str) -> Path:
        return self.received / f"{sop_instance_uid}.dcm"

    def quarantine_path(self, sop_instance_uid: str) -> Path:
        return self.quarantine / f"{sop_instance_uid}.dcm"

    def report_path(self, sr_sop_instance_uid: str) -> Path:
        return self.reports / f"{sr_sop_instance_uid}.dcm"


class Doorbell:
    """Wakes idle workers, in this process or in worker processes, when work arrives.

    A semaphore rather than an Event: ringing is one ``sem_post``, so a process killed while
    ringing leaves no lock held that the others would wait on for ever.
    """

    def __init__(self) -> None:
        self._rings = multiprocessing.get_context("spawn").Semaphore(0)

    def ring(self) -> None:
        self._rings.release()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a ring; True if rung. Rings so far count as one."""
        rung = self._rings.acquire(timeout=timeout_s)
        while self._rings.acquire(block=False):
            pass
        return rung


class ReceiveOutcome(enum.Enum):
    """What the listener answers for one received instance."""

    STORED = "stored"  # on disk and in the database: success
    DUPLICATE = "duplicate"  # already had it: success, nothing new
    INVALID = "invalid"  # kept in quarantine, row failed: "cannot understand"
    MISMATCH = "mismatch"  # dataset does not match the SOP class / instance announced
    NOT_STORED = "not_stored"  # disk or database failed: sender must keep its copy


@dataclass(frozen=True)
class Received:
    """The answer for one C-STORE, with a reason for the sender when it is a failure."""

    outcome: ReceiveOutcome
    reason: str = ""


class Receiver:
    """The listener's side of the pipeline: spool + database + cheap validation, then answer.

    The instance is written to the spool (temp file, fsync, rename) and recorded before the
    sender hears success. An undecodable ECG is kept in quarantine and recorded as failed.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        spool: Spool,
        doorbell: Doorbell | None = None,
    ) -> None:
        self.sessions = sessions
        self.spool = spool
        self.doorbell = doorbell or Doorbell()

    def accept(
        self,
        encoded: bytes,
        announced_sop_class: str,
        announced_sop_instance: str,
        calling_ae_title: str,
        peer: str,
    ) -> Received:
        try:
            dataset = read_dataset_bytes(encoded)
        except InvalidECG as exc:
            return Received(ReceiveOutcome.MISMATCH, exc.reason)
        uid = str(dataset.get("SOPInstanceUID", ""))
        if uid != announced_sop_instance or dataset.get("SOPClassUID") != announced_sop_class:
            return Received(
                ReceiveOutcome.MISMATCH,
                "SOP Class / Instance UID in the dataset differ from the request",
            )
        try:
            reason = None
            try:
                waveform.decode(dataset)
            except InvalidECG as exc:
                reason = exc.reason
            place = self.spool.quarantine_path if reason else self.spool.received_path
            target = place(uid)
            with self.sessions.begin() as session:
                _, created = queries.record_received(
                    session, _new_instance(dataset, target, calling_ae_title, peer, reason)
                )
                if created:  # on disk before the row commits, both before we answer
                    write_atomically(target, encoded)
        except Exception as exc:  # disk full, database down...: the sender keeps its copy
            log.exception("could not store sop_instance_uid=%s", uid)
            return Received(ReceiveOutcome.NOT_STORED, f"not stored: {type(exc).__name__}")
        if not created:
            log.info("duplicate sop_instance_uid=%s calling_ae=%s", uid, calling_ae_title)
            return Received(ReceiveOutcome.DUPLICATE)
        if reason:
            log.warning(
                "invalid ecg sop_instance_uid=%s calling_ae=%s reason=%s",
                uid,
                calling_ae_title,
                reason,
            )
            return Received(ReceiveOutcome.INVALID, reason)
        log.info("received sop_instance_uid=%s calling_ae=%s", uid, calling_ae_title)
        self.doorbell.ring()
        return Received(ReceiveOutcome.STORED)


def _new_instance(
    dataset: Dataset, path: Path, calling_ae_title: str, peer: str, reason: str | None = None
) -> queries.NewInstance:
    return queries.NewInstance(
        sop_instance_uid=str(dataset.SOPInstanceUID),
        study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
        series_instance_uid=str(dataset.get("SeriesInstanceUID", "")),
        sop_class_uid=str(dataset.get("SOPClassUID", "")),
        spool_path=str(path),
        calling_ae_title=calling_ae_title,
        peer_address=peer,
        status=InstanceStatus.FAILED if reason else InstanceStatus.RECEIVED,
        error=reason,
    )


def algorithm_of(card: ModelCard) -> sr.AlgorithmDescription:
    """What an SR says about the card's model."""
    return sr.AlgorithmDescription(
        card.name, card.version, card.intended_use, card.validated_for_clinical_use
    )


def default_worker_id() -> str:
    """host:pid, so that claims say who holds them."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class _Decoded:
    instance: ReceivedInstance
    header: Dataset
    model_input: np.ndarray
    chronological_age: float | None


class Pipeline:
    """Turns received instances into predictions, SRs and pending deliveries."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        runtime: ModelRuntime,
        spool: Spool,
        *,
        send_to: Sequence[str],
        destinations: Sequence[Destination] = (),
        sr_class: sr.SRClass = sr.SRClass.COMPREHENSIVE,
        batch_size: int = 32,
        worker_id: str | None = None,
        claim_timeout: timedelta = timedelta(minutes=2),
    ) -> None:
        self.sessions = sessions
        self.runtime = runtime
        self.spool = spool
        self.send_to = list(send_to)
        self.destinations = list(destinations)
        self.sr_class = sr_class
        self.batch_size = batch_size
        self.worker_id = worker_id or default_worker_id()
        self.claim_timeout = claim_timeout
        self.algorithm = algorithm_of(runtime.card)
        sr.prepare(self.algorithm, sr_class)

    def ingest_file(self, path: Path, calling_ae_title: str = "", peer: str = "") -> bool:
        """Copy a file into the spool and record it (a file drop instead of a C-STORE).

        Returns False when the same SOP Instance UID was already received.
        """
        dataset = read_dataset(path)
        uid = str(dataset.SOPInstanceUID)
        target = self.spool.received_path(uid)
        with self.sessions.begin() as session:
            _, created = queries.record_received(
                session, _new_instance(dataset, target, calling_ae_title, peer)
            )
            if created:
                write_atomically(target, Path(path).read_bytes())
        return created

    def resume(self) -> int:
        """Requeue claims left by dead workers; returns how many."""
        with self.sessions.begin() as session:
            count = queries.requeue_stale_claims(session, self.claim_timeout)
        if count:
            log.info("requeued stale claims count=%d", count)
        return count

    def run_once(self) -> int:
        """Claim and process one batch; returns how many instances it finished."""
        with self.sessions() as session:
            card = self.runtime.card
            with session.begin():
                claimed = queries.claim_received(session, self.worker_id, self.batch_size)
                done = queries.already_predicted(
                    session, [row.id for row in claimed], card.name, card.version
                )
                for instance in claimed:
                    if instance.id in done:  # predicted before a crash: never twice
                        instance.status = InstanceStatus.PREDICTED
                        instance.claimed_by = None
            if not claimed:
                return 0
            decoded, failures = self._decode([row for row in claimed if row.id not in done])
            try:
                ages = self._predict(decoded)
            except Exception:
                log.exception("model failed; batch returned to the queue size=%d", len(decoded))
                with session.begin():
                    for item in decoded:
                        item.instance.status = InstanceStatus.RECEIVED
                        item.instance.claimed_by = None
                raise
            reports = [
                self._write_report(item, age) for item, age in zip(decoded, ages, strict=True)
            ]
            with session.begin():
                for instance, reason in failures:
                    queries.mark_failed(session, instance, reason)
                    self._quarantine(instance)
                for item, (prediction, sr_uid, sr_path) in zip(decoded, reports, strict=True):
                    queries.save_result(
                        session,
                        item.instance,
                        prediction,
                        sr_uid,
                        str(sr_path),
                        self._destinations_for(item.instance),
                    )
            for instance, reason in failures:
                log.warning(
                    "ecg failed sop_instance_uid=%s reason=%s", instance.sop_instance_uid, reason
                )
            for item, (prediction, sr_uid, _) in zip(decoded, reports, strict=True):
                log.info(
                    "ecg predicted sop_instance_uid=%s predicted_age=%.1f sr=%s model=%s %s",
                    item.instance.sop_instance_uid,
                    prediction.predicted_age_years,
                    sr_uid,
                    self.algorithm.name,
                    self.algorithm.version,
                )
            return len(claimed)

    def run_until_idle(self) -> int:
        """Process batches until nothing is left to claim; returns how many were finished."""
        total = 0
        while finished := self.run_once():
            total += finished
        return total

    def _decode(
        self, claimed: list[ReceivedInstance]
    ) -> tuple[list[_Decoded], list[tuple[ReceivedInstance, str]]]:
        decoded, failures = [], []
        card = self.runtime.card
        for instance in claimed:
            try:
                dataset = read_dataset(Path(instance.spool_path))
                ecg = waveform.decode(dataset)
            except InvalidECG as exc:
                failures.append((instance, exc.reason))
                continue
            model_input = card.input.model_input(ecg)
            del dataset.WaveformSequence  # the SR needs the header only
            decoded.append(_Decoded(instance, dataset, model_input, chronological_age(dataset)))
        return decoded, failures

    def _predict(self, decoded: list[_Decoded]) -> np.ndarray:
        if not decoded:
            return np.empty(0)
        return self.runtime.predict(np.stack([item.model_input for item in decoded]))

    def _write_report(self, item: _Decoded, age: float) -> tuple[Prediction, str, Path]:
        chronological = item.chronological_age
        document = sr.build_report(
            item.header, self.algorithm, float(age), chronological, sr_class=self.sr_class
        )
        path = write_atomically(
            self.spool.report_path(document.SOPInstanceUID), dataset_bytes(document)
        )
        prediction = Prediction(
            model_name=self.algorithm.name,
            model_version=self.algorithm.version,
            predicted_age_years=round(float(age), 2),
            chronological_age_years=None if chronological is None else round(chronological, 2),
            age_gap_years=None if chronological is None else round(float(age) - chronological, 2),
        )
        return prediction, str(document.SOPInstanceUID), path

    def _destinations_for(self, instance: ReceivedInstance) -> list[str]:
        names = []
        for name in self.send_to:
            if name != SEND_BACK_TO_SENDER:
                names.append(name)
                continue
            sender = next(
                (d.name for d in self.destinations if d.ae_title == instance.calling_ae_title), None
            )
            # Kept as "@sender" when no destination matches: delivery then reports why.
            names.append(sender or SEND_BACK_TO_SENDER)
        return names

    def _quarantine(self, instance: ReceivedInstance) -> None:
        source = Path(instance.spool_path)
        if source.exists():
            target = self.spool.quarantine_path(instance.sop_instance_uid)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            instance.spool_path = str(target)
