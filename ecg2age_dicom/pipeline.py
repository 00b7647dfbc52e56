"""The worker loop: the one place that knows the order of the stages.

    "received" rows (spooled by :mod:`ecg2age_dicom.receive`)
      -> claim a batch (store) -> read + prepare each (scoring: identity, decode, model input)
      -> score the batch in one model call (scoring)
      -> build and write each report object, SR and PDF as ``[report] outputs`` says
         (outputs, spool; the folder synced once for the batch)
      -> results, reports and one delivery per report and destination, failures with their
         reasons, in one transaction (store)

Every ECG fails alone: one that cannot be read, decoded, scored or reported is marked
``failed`` with its reason, its file moved to quarantine and a log line written, while the
rest of its batch goes on. Only a failure of the model itself returns the batch to the
queue. The same SOP Instance UID is never predicted twice by the same model version; a
restart resumes every row that is not final (claims of a dead worker are requeued after
``claim_timeout``).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from ecg2age_dicom import metrics, scoring, sr
from ecg2age_dicom.dicomfile import read_dataset, sync_folder, write_atomically
from ecg2age_dicom.errors import InvalidECG
from ecg2age_dicom.model import ModelRuntime
from ecg2age_dicom.outputs import Output, build_outputs
from ecg2age_dicom.outputs import prepare as prepare_outputs
from ecg2age_dicom.spool import Spool
from ecg2age_dicom.store import queries
from ecg2age_dicom.store.models import InstanceStatus, ReceivedInstance

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    """host:pid, so that claims say who holds them."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class _Report:
    instance: ReceivedInstance
    score: scoring.Score
    quality_flags: tuple[str, ...]
    objects: list[queries.NewReport]


class Pipeline:
    """Turns received instances into predictions, reports and pending deliveries."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        runtime: ModelRuntime,
        spool: Spool,
        send_to: Sequence[str],
        *,
        outputs: Sequence[str] = ("sr",),
        sr_class: sr.SRClass = sr.SRClass.COMPREHENSIVE,
        paper: str = "A4",
        batch_size: int = 32,
        worker_id: str | None = None,
        claim_timeout: timedelta = timedelta(minutes=2),
    ) -> None:
        self.sessions = sessions
        self.runtime = runtime
        self.spool = spool
        self.send_to = list(send_to)
        self.outputs = list(outputs)
        self.sr_class = sr_class
        self.paper = paper
        self.batch_size = batch_size
        self.worker_id = worker_id or default_worker_id()
        self.claim_timeout = claim_timeout
        self.algorithm = scoring.algorithm_of(runtime.card)
        prepare_outputs(self.algorithm, self.outputs, sr_class=sr_class, paper=paper)

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
            failures: list[tuple[ReceivedInstance, str]] = []
            prepared = self._prepare([row for row in claimed if row.id not in done], failures)
            try:
                with metrics.timed("predict"):
                    scores = scoring.score(
                        self.runtime,
                        [item.model_input for _, item in prepared],
                        [item.chronological_age for _, item in prepared],
                    )
            except Exception:
                log.exception("model failed; batch returned to the queue size=%d", len(prepared))
                with session.begin():
                    for instance, _ in prepared:
                        instance.status = InstanceStatus.RECEIVED
                        instance.claimed_by = None
                raise
            reports = self._reports(prepared, scores, failures)
            if reports:  # their files' names, once for the batch, before the rows name them
                sync_folder(self.spool.reports)
            with session.begin():
                for instance, reason in failures:
                    queries.mark_failed(session, instance, reason)
                    self._quarantine(instance)
                queries.save_results(session, [self._result(report) for report in reports])
            metrics.predicted(self.algorithm.name, self.algorithm.version, len(reports))
            self._log(failures, reports)
            return len(claimed)

    def run_until_idle(self) -> int:
        """Process batches until nothing is left to claim; returns how many were finished."""
        total = 0
        while finished := self.run_once():
            total += finished
        return total

    def _prepare(
        self, claimed: list[ReceivedInstance], failures: list[tuple[ReceivedInstance, str]]
    ) -> list[tuple[ReceivedInstance, scoring.Scorable]]:
        prepared = []
        for instance in claimed:
            try:
                with metrics.timed("decode"):
                    dataset = read_dataset(Path(instance.spool_path))
                    prepared.append((instance, scoring.prepare(dataset, self.runtime.card)))
            except InvalidECG as exc:
                failures.append((instance, exc.reason))
            except Exception as exc:  # a malformed value pydicom cannot convert...
                log.debug("decoding failed", exc_info=True)
                failures.append((instance, f"cannot be decoded ({type(exc).__name__})"))
        return prepared

    def _reports(
        self,
        prepared: list[tuple[ReceivedInstance, scoring.Scorable]],
        scores: list[scoring.Score | str],
        failures: list[tuple[ReceivedInstance, str]],
    ) -> list[_Report]:
        reports = []
        for (instance, item), result in zip(prepared, scores, strict=True):
            if isinstance(result, str):
                failures.append((instance, result))
                continue
            try:
                with metrics.timed("report"):
                    made = build_outputs(
                        item,
                        result,
                        self.algorithm,
                        self.outputs,
                        sr_class=self.sr_class,
                        paper=self.paper,
                    )
                    objects = [self._spooled(output) for output in made]
            except Exception as exc:  # one report that cannot be made fails alone
                log.debug("report failed", exc_info=True)
                failures.append((instance, f"the report could not be made ({type(exc).__name__})"))
                continue
            reports.append(_Report(instance, result, item.quality.flags, objects))
        return reports

    def _spooled(self, output: Output) -> queries.NewReport:
        """Write a report object into the spool, where it waits for its deliveries."""
        path = self.spool.report_path(output.sop_instance_uid)
        write_atomically(path, output.encoded, defer_folder_sync=True)
        return queries.NewReport(output.kind, output.sop_instance_uid, str(path))

    def _log(self, failures: list[tuple[ReceivedInstance, str]], reports: list[_Report]) -> None:
        for instance, reason in failures:
            log.warning(
                "ecg failed sop_instance_uid=%s reason=%s", instance.sop_instance_uid, reason
            )
        for report in reports:
            log.info(
                "ecg predicted sop_instance_uid=%s predicted_age=%.1f quality_flags=%s %s "
                "model=%s %s",
                report.instance.sop_instance_uid,
                report.score.predicted_age_years,
                ",".join(report.quality_flags) or "none",
                " ".join(f"{o.kind}={o.sop_instance_uid}" for o in report.objects),
                self.algorithm.name,
                self.algorithm.version,
            )

    def _result(self, report: _Report) -> queries.NewResult:
        return queries.NewResult(
            instance_id=report.instance.id,
            model_name=self.algorithm.name,
            model_version=self.algorithm.version,
            predicted_age_years=report.score.predicted_age_years,
            chronological_age_years=report.score.chronological_age_years,
            age_gap_years=report.score.age_gap_years,
            age_gap_corrected_years=report.score.age_gap_corrected_years,
            quality_flags=report.quality_flags,
            reports=report.objects,
            destinations=self.send_to,
        )

    def _quarantine(self, instance: ReceivedInstance) -> None:
        source = Path(instance.spool_path)
        if source.exists():
            target = self.spool.quarantine_path(instance.sop_instance_uid)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            instance.spool_path = str(target)
