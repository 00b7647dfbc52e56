"""Scoring files in bulk (``predict``): decoding in several processes, the model in batches,
each batch's rows written as soon as it is scored.

    paths --(PreparedFiles: spawned processes, read + scoring.prepare, in order, a bounded
    window ahead; started before the model loads)--> Prepared --(batches of [model]
    batch_size, one model call each: scoring.score)--> rows (+ each ECG's report objects
    with ``--out-dir``) --> RowWriter (table, CSV or JSON Lines, flushed after every batch)

The window bounds memory whatever the number of files; a file that cannot be read, decoded
or scored becomes a row with its reason and the rest go on. With ``--output FILE --resume``,
the files already in ``FILE`` are skipped (:func:`done_paths`) and new rows are appended.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ecg2age_dicom import logs, scoring, sr
from ecg2age_dicom.config import Settings
from ecg2age_dicom.dicomfile import read_dataset, write_atomically
from ecg2age_dicom.errors import InvalidECG
from ecg2age_dicom.identity import is_valid_uid
from ecg2age_dicom.model import ModelCard, ModelRuntime
from ecg2age_dicom.outputs import KINDS, build_outputs

FIELDS = (
    "path",
    "sop_instance_uid",
    "predicted_age_years",
    "chronological_age_years",
    "age_gap_years",
    "age_gap_corrected_years",
    "quality_flags",
    "model_name",
    "model_version",
    "error",
    *(f"{kind}_{field}" for kind in KINDS for field in ("sop_instance_uid", "path")),
)
CHUNK_FILES = 8  # files per task sent to a decoding process: fewer, larger messages
WINDOW_FILES = 256  # prepared ahead of the model: work done while it loads, bounded memory
WINDOW_CHUNKS_PER_JOB = 4  # ...or more, to keep many processes busy
STOP_TIMEOUT_S = 5.0  # for each decoding process to end when told to


@dataclass(frozen=True)
class Prepared:
    """One file after a decoding process: what the model needs, or why there is nothing.

    ``scorable`` (the whole prepared ECG, for its reports) travels back only when reports are
    written; otherwise only the model input does.
    """

    path: str
    sop_instance_uid: str | None
    model_input: np.ndarray | None = None
    chronological_age: float | None = None
    quality_flags: tuple[str, ...] = ()
    error: str | None = None
    scorable: scoring.Scorable | None = None


def prepare_file(path: str, card: ModelCard, keep_scorable: bool) -> Prepared:
    """Read and prepare one file (:func:`~ecg2age_dicom.scoring.prepare`); never raises."""
    uid = None
    try:
        dataset = read_dataset(Path(path))
        value = str(dataset.get("SOPInstanceUID", ""))
        uid = value if is_valid_uid(value) else None
        item = scoring.prepare(dataset, card)
    except InvalidECG as exc:
        return Prepared(path, uid, error=exc.reason)
    except Exception as exc:  # a malformed value pydicom cannot convert...
        return Prepared(path, uid, error=f"cannot be decoded ({type(exc).__name__})")
    return Prepared(
        path,
        uid,
        item.model_input,
        item.chronological_age,
        item.quality.flags,
        scorable=item if keep_scorable else None,
    )


class DecodingProcessEnded(Exception):
    """A decoding process ended before it answered (killed, or out of memory)."""


def _decode_files(
    tasks: Connection, results: Connection, card: ModelCard, keep_scorable: bool, log_level: int
) -> None:
    """A decoding process: each list of paths it is sent, prepared and sent back, until its
    task pipe ends (the parent left or died: this process then ends too)."""
    logs.configure(log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent's
    with contextlib.suppress(EOFError, OSError):
        while True:
            results.send([prepare_file(path, card, keep_scorable) for path in tasks.recv()])


@dataclass
class _Decoder:
    """One decoding process, its two pipes, and what it has sent back (a reader thread
    drains its pipe, so that it works ahead; None once it has ended)."""

    process: BaseProcess
    tasks: Connection
    results: Connection
    done: queue.SimpleQueue[list[Prepared] | None] = field(default_factory=queue.SimpleQueue)

    def receive(self) -> None:
        # Its pipe ends with the process (EOFError, or OSError within a message); whatever
        # else breaks it, the consumer must hear that nothing more comes.
        with contextlib.suppress(Exception):
            while True:
                self.done.put(self.results.recv())
        self.done.put(None)


class PreparedFiles:
    """Each path prepared, in the order given, by ``jobs`` spawned processes (0: one per CPU;
    1: here, as it is asked for).

    The processes start on entering and work ahead while the caller loads its model; they
    keep at most :data:`WINDOW_FILES` (or ``WINDOW_CHUNKS_PER_JOB`` chunks per process, when
    that is more) prepared ahead of the consumer, which bounds memory (about 240 KB per file
    for a 5000 x 12 model input). Chunk k goes to process k mod ``jobs`` and comes back in
    that order. Each process has pipes of its own, not the shared result queue of a
    ``ProcessPoolExecutor``: there, a process killed while sending its result leaves the
    pool reading the rest of that message for ever (docs/upstream-defects.md, section 7),
    while here the end of its own pipe raises :class:`DecodingProcessEnded`. Leaving stops
    them.
    """

    def __init__(
        self, paths: Sequence[Path], card: ModelCard, *, jobs: int, keep_scorable: bool
    ) -> None:
        self._names = (str(path) for path in paths)
        self._card, self._keep_scorable = card, keep_scorable
        self.jobs = min(jobs or os.cpu_count() or 1, max(1, len(paths)))
        self._ahead = max(WINDOW_FILES // CHUNK_FILES, WINDOW_CHUNKS_PER_JOB * self.jobs)
        self._decoders: list[_Decoder] = []
        self._sent = self._taken = 0  # chunks

    def __enter__(self) -> PreparedFiles:
        if self.jobs > 1:
            # Spawned: the parent holds TensorFlow's threads, which a fork would copy mid-flight.
            spawn = multiprocessing.get_context("spawn")
            for _ in range(self.jobs):
                their_tasks, tasks = spawn.Pipe(duplex=False)
                results, their_results = spawn.Pipe(duplex=False)
                process = spawn.Process(
                    target=_decode_files,
                    args=(their_tasks, their_results, self._card, self._keep_scorable),
                    kwargs={"log_level": logging.getLogger().level},
                    daemon=True,
                )
                process.start()
                their_tasks.close()  # only the process holds its ends: each ends with it
                their_results.close()
                decoder = _Decoder(process, tasks, results)
                threading.Thread(target=decoder.receive, daemon=True).start()
                self._decoders.append(decoder)
            self._send()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for decoder in self._decoders:  # nothing of theirs to keep: stop them now
            decoder.process.terminate()
        for decoder in self._decoders:
            decoder.process.join(STOP_TIMEOUT_S)
            if decoder.process.is_alive():  # SIGTERM waits, e.g. on a stalled network read
                decoder.process.kill()
                decoder.process.join(STOP_TIMEOUT_S)
            decoder.tasks.close()
            decoder.results.close()

    def _send(self) -> None:
        while self._sent - self._taken < self._ahead:
            chunk = list(itertools.islice(self._names, CHUNK_FILES))
            if not chunk:
                return
            with contextlib.suppress(OSError):  # an ended process: its reader says so
                self._decoders[self._sent % self.jobs].tasks.send(chunk)
            self._sent += 1

    def __iter__(self) -> Iterator[Prepared]:
        if not self._decoders:
            yield from (prepare_file(name, self._card, self._keep_scorable) for name in self._names)
            return
        while self._taken < self._sent:
            chunk = self._decoders[self._taken % self.jobs].done.get()
            if chunk is None:
                raise DecodingProcessEnded(
                    f"decoding process {self._taken % self.jobs + 1} ended abruptly"
                )
            self._taken += 1
            self._send()
            yield from chunk


def _batches(items: Iterator[Prepared], size: int) -> Iterator[list[Prepared]]:
    """Consecutive lists holding ``size`` scorable files each (failed ones ride along, up to
    ``size`` times as many, so that a folder of bad files is still written as it goes)."""
    batch: list[Prepared] = []
    scorable = 0
    for item in items:
        batch.append(item)
        scorable += item.model_input is not None
        if scorable == size or len(batch) == 2 * size:
            yield batch
            batch, scorable = [], 0
    if batch:
        yield batch


class BulkScorer:
    """Scores files with one model, as ``predict`` does; see the module docstring."""

    def __init__(self, runtime: ModelRuntime, settings: Settings, *, out_dir: Path | None) -> None:
        self.runtime = runtime
        self.settings = settings
        self.out_dir = out_dir
        self.algorithm = scoring.algorithm_of(runtime.card)

    def rows(self, prepared: Iterable[Prepared]) -> Iterator[list[dict[str, Any]]]:
        """The rows of ``prepared`` (from :class:`PreparedFiles` with this model's card and
        ``keep_scorable`` when ``out_dir`` is set), in order, one list per model batch."""
        for batch in _batches(iter(prepared), self.settings.model.batch_size):
            yield self._score(batch)

    def _score(self, batch: list[Prepared]) -> list[dict[str, Any]]:
        card = self.runtime.card
        ready = [item for item in batch if item.model_input is not None]
        scores = scoring.score(
            self.runtime,
            [item.model_input for item in batch if item.model_input is not None],
            [item.chronological_age for item in ready],
        )
        results = iter(scores)
        rows = []
        for item in batch:
            row: dict[str, Any] = dict.fromkeys(FIELDS)
            row.update(
                path=item.path,
                sop_instance_uid=item.sop_instance_uid,
                model_name=card.name,
                model_version=card.version,
                error=item.error,
            )
            result = None if item.model_input is None else next(results)
            if isinstance(result, str):
                row["error"] = result
            elif result is not None:
                row.update(
                    predicted_age_years=result.predicted_age_years,
                    chronological_age_years=result.chronological_age_years,
                    age_gap_years=result.age_gap_years,
                    age_gap_corrected_years=result.age_gap_corrected_years,
                    quality_flags=list(item.quality_flags),
                )
                if item.scorable is not None:
                    row.update(self._write_reports(item.scorable, result))
            rows.append(row)
        return rows

    def _write_reports(self, item: scoring.Scorable, result: scoring.Score) -> dict[str, str]:
        assert self.out_dir is not None
        written = {}
        for output in build_outputs(
            item,
            result,
            self.algorithm,
            self.settings.report.outputs,
            sr_class=sr.SRClass(self.settings.sr.sop_class),
            paper=self.settings.report.paper,
        ):
            path = write_atomically(self.out_dir / f"{output.sop_instance_uid}.dcm", output.encoded)
            written[f"{output.kind}_sop_instance_uid"] = output.sop_instance_uid
            written[f"{output.kind}_path"] = str(path)
        return written


def csv_cells(row: dict[str, Any]) -> dict[str, Any]:
    """A row for a CSV file: a list (the quality flags) as one cell, its items joined by ";"."""
    return {k: ";".join(v) if isinstance(v, list) else v for k, v in row.items()}


class RowWriter:
    """Writes rows as a table, CSV (header first, unless appending) or JSON Lines; flushes
    after each :meth:`write` so that what is written survives a kill."""

    def __init__(self, out: TextIO, fmt: str, *, header: bool = True) -> None:
        self.out = out
        self.fmt = fmt
        self.model: tuple[str, str] | None = None
        self._csv = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        if header and fmt == "csv":
            self._csv.writeheader()
        elif fmt == "table":
            print(f"{'predicted':>10} {'chrono':>7} {'gap':>7}  path / reason", file=out)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self.model = (row["model_name"], row["model_version"])
            if self.fmt == "json":
                print(json.dumps(row), file=self.out)
            elif self.fmt == "csv":
                self._csv.writerow(csv_cells(row))
            else:
                print(_table_line(row), file=self.out)
        self.out.flush()

    def close(self) -> None:
        if self.fmt == "table" and self.model:
            print(f"model: {self.model[0]} {self.model[1]}", file=self.out)
        self.out.flush()


def _table_line(row: dict[str, Any]) -> str:
    if row["error"]:
        return f"{'-':>10} {'-':>7} {'-':>7}  {row['path']}: {row['error']}"
    cells = [row["predicted_age_years"], row["chronological_age_years"], row["age_gap_years"]]
    text = [f"{c:.1f}" if c is not None else "?" for c in cells]
    flags = row["quality_flags"]
    shown = f"  (signal quality: {', '.join(flags)})" if flags else ""
    return f"{text[0]:>10} {text[1]:>7} {text[2]:>7}  {row['path']}{shown}"


def done_paths(output: Path, fmt: str) -> set[str]:
    """The files an earlier run already wrote to ``output`` (CSV or JSON Lines).

    A last line cut off by a kill is removed from the file first, so that its file is
    scored again and the output stays well-formed.
    """
    if not output.exists():
        return set()
    content = output.read_bytes()
    whole = content[: content.rfind(b"\n") + 1]
    if len(whole) != len(content):
        with open(output, "r+b") as handle:
            handle.truncate(len(whole))
    lines = whole.decode("utf-8").splitlines()
    if fmt == "json":
        return {json.loads(line)["path"] for line in lines if line.strip()}
    return {row["path"] for row in csv.DictReader(lines)}
