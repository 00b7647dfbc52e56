"""The ``ecg2age-dicom`` command: argument parsing and printing, nothing else.

Each sub-command is a small function that builds what it needs from the settings and the
stage modules, prints, and returns the process exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import getpass
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from pydicom.uid import UID
from sqlalchemy.engine import make_url

from ecg2age_dicom import __version__, logs, scoring, waveform
from ecg2age_dicom.bulk import (
    BulkScorer,
    DecodingProcessEnded,
    PreparedFiles,
    RowWriter,
    csv_cells,
    done_paths,
)
from ecg2age_dicom.config import Settings, load_settings
from ecg2age_dicom.dicomfile import expand_paths, read_dataset
from ecg2age_dicom.errors import ConfigError, InvalidECG, ModelError
from ecg2age_dicom.identity import check_identity
from ecg2age_dicom.model import ModelRuntime, check_file, load_card, sha256_of
from ecg2age_dicom.progress import progress_bar
from ecg2age_dicom.store import audit, open_store, queries
from ecg2age_dicom.users import UserError, add_user, list_users, remove_user

DEFAULT_DATA_DIR = Path("../shared/data")
PLAUSIBLE_AGE_YEARS = (0.0, 120.0)


@dataclass
class InspectResult:
    """What ``inspect`` reports for one file."""

    path: str
    sop_class: str = ""
    sop_instance_uid: str | None = None
    group_label: str | None = None
    sampling_frequency: float | None = None
    duration_s: float | None = None
    leads_found: list[str] = field(default_factory=list)
    leads_derived: list[str] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    lead_min_uv: dict[str, float] = field(default_factory=dict)
    lead_max_uv: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sop_instance_uid": self.sop_instance_uid,
            "sop_class": self.sop_class,
            "group_label": self.group_label,
            "sampling_frequency": self.sampling_frequency,
            "duration_s": self.duration_s,
            "leads_found": self.leads_found,
            "leads_derived": self.leads_derived,
            "units": self.units,
            "lead_min_uv": self.lead_min_uv,
            "lead_max_uv": self.lead_max_uv,
            "ok": self.ok,
            "error": self.error,
        }


def sop_class_name(uid: str) -> str:
    """A readable name for a SOP Class UID (pydicom's dictionary), or the UID itself."""
    if not uid:
        return "(no SOP Class UID)"
    name = UID(uid).name
    return name if name != uid else f"unknown SOP class {uid}"


def inspect_file(path: Path) -> InspectResult:
    """Decode one file and summarise it; a decoding failure is reported, not raised."""
    result = InspectResult(path=str(path))
    try:
        dataset = read_dataset(path)
        result.sop_class = sop_class_name(str(dataset.get("SOPClassUID", "")))
        result.sop_instance_uid = check_identity(dataset).sop_instance_uid
        ecg = waveform.decode(dataset)
    except InvalidECG as exc:
        result.error = exc.reason
        return result
    model_input = waveform.to_model_input(ecg)
    result.group_label = ecg.group_label
    result.sampling_frequency = ecg.sampling_frequency
    result.duration_s = round(ecg.duration_s, 3)
    result.leads_found = list(ecg.leads_found)
    result.leads_derived = list(ecg.leads_derived)
    result.units = list(ecg.units)
    for index, lead in enumerate(waveform.LEADS):
        result.lead_min_uv[lead] = round(float(model_input[:, index].min()), 1)
        result.lead_max_uv[lead] = round(float(model_input[:, index].max()), 1)
    return result


def _print_inspect_table(result: InspectResult, out: TextIO) -> None:
    print(result.path, file=out)
    if result.sop_class:
        print(f"  SOP class         {result.sop_class}", file=out)
    if result.sop_instance_uid:
        print(f"  SOP Instance UID  {result.sop_instance_uid}", file=out)
    if not result.ok:
        print(f"  INVALID: {result.error}", file=out)
        return
    rows = [
        ("group", result.group_label or "(no label)"),
        (
            "sampling rate",
            f"{result.sampling_frequency:g} Hz (model input: {waveform.STANDARD_HZ} Hz)",
        ),
        ("duration", f"{result.duration_s:.2f} s (model input: {waveform.STANDARD_SECONDS:g} s)"),
        ("leads found", " ".join(result.leads_found)),
        ("leads derived", " ".join(result.leads_derived) or "none"),
        ("units", ", ".join(result.units)),
    ]
    for name, value in rows:
        print(f"  {name:<17} {value}", file=out)
    print(f"  {'lead':<6}{'min uV':>10}{'max uV':>10}", file=out)
    for lead in waveform.LEADS:
        low, high = result.lead_min_uv[lead], result.lead_max_uv[lead]
        print(f"  {lead:<6}{low:>10.1f}{high:>10.1f}", file=out)


def cmd_inspect(args: argparse.Namespace, out: TextIO) -> int:
    paths = list(expand_paths(args.paths))
    if not paths:
        print("no files found", file=sys.stderr)
        return 1
    all_ok = True
    for path in paths:
        result = inspect_file(path)
        all_ok &= result.ok
        if args.format == "json":
            print(json.dumps(result.as_json()), file=out)
        else:
            _print_inspect_table(result, out)
    return 0 if all_ok else 1


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from ecg2age_dicom.service import serve

    return serve(load_settings(args.config))


def cmd_resend(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings(args.config)
    with open_store(settings.storage.database_url) as sessions, sessions.begin() as session:
        count = queries.resend(session, args.status, args.sop)
    print(f"{count} deliveries queued again; the running service sends them", file=out)
    return 0


def _card_path(args: argparse.Namespace, settings: Settings) -> Path:
    return args.card or settings.model.card


def load_runtime(args: argparse.Namespace, settings: Settings) -> ModelRuntime:
    """The model named by ``--card`` or the configuration, loaded as the service loads it."""
    return ModelRuntime.from_settings(settings.model, args.card)


def cmd_predict(args: argparse.Namespace, out: TextIO) -> int:
    if args.resume and (args.output is None or args.format == "table"):
        raise UserError("--resume needs --output FILE and --format csv or json")
    settings = load_settings(args.config)
    paths = list(expand_paths(args.paths))
    done = done_paths(args.output, args.format) if args.resume else set()
    todo = [path for path in paths if str(path) not in done]
    card = load_card(_card_path(args, settings))
    all_ok = bool(paths)
    written = 0
    again = " (the same command with --resume goes on)" if args.output else ""
    try:
        with contextlib.ExitStack() as files:
            prepared = files.enter_context(
                PreparedFiles(todo, card, jobs=args.jobs, keep_scorable=args.sr_dir is not None)
            )
            runtime = load_runtime(args, settings)  # while the first files are prepared
            scorer = BulkScorer(runtime, settings, out_dir=args.sr_dir)
            target = out
            if args.output is not None:
                target = files.enter_context(open(args.output, "a", encoding="utf-8"))
            header = args.output is None or target.tell() == 0
            writer = RowWriter(target, args.format, header=header)
            with progress_bar() as progress:
                task = progress.add_task("scoring", total=len(todo))
                for rows in scorer.rows(prepared):
                    writer.write(rows)
                    written += len(rows)
                    all_ok &= all(row["error"] is None for row in rows)
                    progress.advance(task, len(rows))
            writer.close()
    except KeyboardInterrupt:  # Ctrl-C: every row written so far is in place
        print(f"interrupted after {written} of {len(todo)} files{again}", file=sys.stderr)
        return 130
    except DecodingProcessEnded as exc:  # killed (by the OOM killer, say)
        print(
            f"ecg2age-dicom: {exc} (killed, or out of memory?) after {written} of "
            f"{len(todo)} files{again}",
            file=sys.stderr,
        )
        return 1
    if done:
        print(f"{len(paths) - len(todo)} files already in {args.output}", file=sys.stderr)
    return 0 if all_ok else 1


def cmd_model_info(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings(args.config)
    card = load_card(_card_path(args, settings))
    present = card.path.is_file()
    sha_ok = present and sha256_of(card.path) == card.sha256
    info = {
        "name": card.name,
        "version": card.version,
        "intended_use": card.intended_use,
        "validated_for_clinical_use": card.validated_for_clinical_use,
        "file": str(card.path),
        "file_present": present,
        "sha256_ok": sha_ok,
        "sha256": card.sha256,
        "size_bytes": card.size_bytes,
        "source_url": card.source_url,
        "input": card.input.model_dump(),
        "output": card.output.model_dump(),
        "metrics": {name: m.model_dump(exclude_none=True) for name, m in card.metrics.items()},
    }
    if args.format == "json":
        print(json.dumps(info), file=out)
        return 0
    for key in ("name", "version", "intended_use", "file", "size_bytes", "source_url"):
        print(f"{key:<16} {info[key]}", file=out)
    state = "sha256 OK" if sha_ok else ("sha256 MISMATCH" if present else "MISSING (model fetch)")
    print(f"{'file state':<16} {state}", file=out)
    print(
        f"{'input':<16} {card.input.samples} x {len(card.input.leads)} at "
        f"{card.input.sampling_rate_hz} Hz, {card.input.normalization}",
        file=out,
    )
    print(f"{'output':<16} years = output x {card.output.scale} + {card.output.offset}", file=out)
    for name, metrics in card.metrics.items():
        values = metrics.model_dump(exclude_none=True)
        print(f"metrics {name}: " + ", ".join(f"{k} {v}" for k, v in values.items()), file=out)
    return 0


def cmd_model_fetch(args: argparse.Namespace, out: TextIO) -> int:
    from ecg2age_dicom.fetch import fetch, progress_printer

    settings = load_settings(args.config)
    card = load_card(_card_path(args, settings))
    path = fetch(card, progress_printer())
    print(f"\n{path}: sha256 {card.sha256} OK", file=out)
    return 0


def cmd_model_verify(args: argparse.Namespace, out: TextIO) -> int:
    from pydicom.data import get_testdata_file

    settings = load_settings(args.config)
    card = load_card(_card_path(args, settings))
    check_file(card)
    print(f"{card.path}: sha256 OK", file=out)
    runtime = load_runtime(args, settings)
    sample = Path(str(get_testdata_file("waveform_ecg.dcm")))
    item = scoring.prepare(read_dataset(sample), card)
    (result,) = scoring.score(runtime, [item.model_input], [item.chronological_age])
    if isinstance(result, str):
        print(f"FAILED: {result}", file=out)
        return 1
    age, chronological = result.predicted_age_years, result.chronological_age_years
    print(
        f"pydicom sample ECG ({sample.name}, Patient's Age {item.header.get('PatientAge')}): "
        f"predicted {age:.1f} years by {card.name} {card.version}",
        file=out,
    )
    low, high = PLAUSIBLE_AGE_YEARS
    if not low <= age <= high:
        print(
            f"WARNING: {age:.1f} years is outside {low:g}-{high:g}: the card's [output] "
            "scale/offset is probably wrong for this model",
            file=out,
        )
        return 1
    if chronological is not None:
        print(f"chronological age {chronological:.1f} years", file=out)
    return _verify_transform(runtime, settings.model.batch_size, out)


def _verify_transform(runtime: ModelRuntime, batch_size: int, out: TextIO) -> int:
    """Predict the reference set; 1 when the card's output transform gives implausible ages."""
    from ecg2age_dicom.model.transforms import check_transforms
    from ecg2age_dicom.training.data import REFERENCE_SET, load_reference
    from ecg2age_dicom.training.evaluate import input_batches

    reference = load_reference()
    card = runtime.card
    batches = input_batches(runtime, reference.signals, reference.fs, batch_size)
    raw = np.concatenate([runtime.predict_raw(np.stack(inputs)) for inputs in batches])
    checks = check_transforms(raw, reference.ages, card.output.scale, card.output.offset)
    print(
        f"\nreference set: {len(reference.ages)} real ECGs ({REFERENCE_SET.name}), true age mean "
        f"{reference.ages.mean():.1f} (sd {reference.ages.std():.1f}) years",
        file=out,
    )
    print(f"  {'transform':<46}{'mean':>7}{'sd':>7}{'r':>7}{'MAE':>7}  plausible", file=out)
    for check in checks:
        name = f"{check.name} (x {check.scale:g} + {check.offset:g})"
        print(
            f"  {name:<46}{check.mean_years:7.1f}{check.sd_years:7.1f}{check.pearson_r:7.2f}"
            f"{check.mae_years:7.1f}  {'yes' if check.plausible else 'NO'}",
            file=out,
        )
    if checks[0].plausible:
        return 0
    better = [check.name for check in checks[1:] if check.plausible]
    print(
        "FAILED: the card's [output] scale/offset gives implausible ages on real ECGs"
        + (f"; plausible: {', '.join(better)}" if better else ""),
        file=out,
    )
    return 1


def cmd_model_train(args: argparse.Namespace, out: TextIO) -> int:
    from ecg2age_dicom.training.train import train, write_card

    result = train(
        args.data,
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        train_folds=tuple(args.train_folds),
        validation_folds=tuple(args.validation_folds),
        limit_per_fold=args.limit_per_fold,
        threads=args.threads,
    )
    card_path = write_card(args.out, result, args.version)
    print(
        f"exported {result.model_path} after {result.epochs_run} epochs (best validation "
        f"MAE {result.best_val_mae_years:.2f} years); card {card_path}; next: "
        f"ecg2age-dicom model evaluate --card {card_path}",
        file=out,
    )
    return 0


def cmd_model_evaluate(args: argparse.Namespace, out: TextIO) -> int:
    from ecg2age_dicom.training.evaluate import evaluate, write_metrics

    settings = load_settings(args.config)
    runtime = load_runtime(args, settings)
    plots = None if args.no_write else runtime.card.folder
    evaluation = evaluate(runtime, args.data, plots)
    print(f"{'test set':<28}{'n':>6}{'MAE':>8}{'RMSE':>8}{'R^2':>8}{'r':>8}", file=out)
    for name, m in evaluation.results.items():
        print(
            f"{name:<28}{m.n:>6}{m.mae:>8.2f}{m.rmse:>8.2f}{m.r2:>8.3f}{m.pearson_r:>8.3f}",
            file=out,
        )
    agreement = evaluation.sampling_rate_agreement
    print(
        f"same ECGs at native 500 Hz vs 100 Hz: n={agreement['n']:.0f}, mean |difference| "
        f"{agreement['mean_abs_difference_years']:.2f} years, r {agreement['pearson_r']:.3f}",
        file=out,
    )
    if not args.no_write:
        write_metrics(_card_path(args, settings), evaluation.results)
        print(f"metrics written to {_card_path(args, settings)}; plots in {plots}", file=out)
    return 0


RESULT_FIELDS = tuple(field.name for field in dataclasses.fields(queries.ResultRow))


def cmd_results(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings(args.config)
    with open_store(settings.storage.database_url) as sessions, sessions() as session:
        rows = [
            dataclasses.asdict(row) for row in queries.results(session, args.status, args.limit)
        ]
    if args.format == "json":
        print(json.dumps(rows, indent=1), file=out)
    elif args.format == "csv":
        writer = csv.DictWriter(out, fieldnames=RESULT_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(map(csv_cells, rows))
    else:
        print(
            f"{'received':<20} {'status':<16}{'pred':>6}{'chrono':>7}{'gap':>7}  "
            "SOP Instance UID / error",
            file=out,
        )
        for row in rows:
            cells = [
                row["predicted_age_years"],
                row["chronological_age_years"],
                row["age_gap_years"],
            ]
            text = [f"{c:.1f}" if c is not None else "-" for c in cells]
            detail = row["sop_instance_uid"] + (f"  {row['error']}" if row["error"] else "")
            print(
                f"{row['received_at'][:19]:<20} {row['status']:<16}{text[0]:>6}{text[1]:>7}"
                f"{text[2]:>7}  {detail}",
                file=out,
            )
    return 0


def _date_option(text: str | None, option: str) -> datetime | None:
    """A date option (``--since``, ``--until``): YYYY-MM-DD, or any ISO date (and time)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"{option} {text!r} is not a date (YYYY-MM-DD)") from None


def _study_date(text: str | None, option: str) -> str | None:
    """A date option as a DICOM DA (YYYYMMDD), for matching Study Date."""
    day = _date_option(text, option)
    return None if day is None else day.strftime("%Y%m%d")


def cmd_backfill(args: argparse.Namespace, out: TextIO) -> int:
    from ecg2age_dicom.backfill import Backfill
    from ecg2age_dicom.net.qr import SourceError

    settings = load_settings(args.config)
    source = settings.source(args.source)
    since, until = _study_date(args.since, "--since"), _study_date(args.until, "--until")
    stopping = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stopping.set())
    with open_store(settings.storage.database_url) as sessions, progress_bar() as progress:
        task = progress.add_task(f"backfill {source.name}", total=None)

        def show(done: int, total: int, state: str) -> None:
            progress.update(task, completed=done, total=total, description=state)

        backfill = Backfill(
            settings, source, sessions, since=since, until=until, stopping=stopping, progress=show
        )
        try:
            if args.dry_run:
                plan = backfill.dry_run()
                progress.stop()
                print(
                    f"{source.name}: {plan.studies} studies with ECGs, {plan.found} ECG "
                    f"instances, {plan.already_held} already held here, "
                    f"{plan.found - plan.already_held} to retrieve (dry run: nothing retrieved"
                    f"{'; interrupted, the counts so far' if stopping.is_set() else ''})",
                    file=out,
                )
                return 1 if stopping.is_set() else 0
            summary = backfill.run()
        except SourceError as exc:
            progress.stop()
            print(f"ecg2age-dicom: {exc.reason}", file=sys.stderr)
            return 1
    print("\n".join(summary.lines()), file=out)
    return 0 if summary.complete else 1


def cmd_db_upgrade(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings(args.config)
    with open_store(settings.storage.database_url):
        pass  # opening the store applies the migrations
    url = make_url(settings.storage.database_url).render_as_string(hide_password=True)
    print(f"database at {url} is up to date", file=out)
    return 0


def _new_password(args: argparse.Namespace) -> str:
    """From standard input (``--password-stdin``: its first line) or asked twice."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings(args.config)
    password = _new_password(args)
    with open_store(settings.storage.database_url) as sessions, sessions.begin() as session:
        add_user(session, args.name, args.role, password, actor="cli")
    print(f"user {args.name} added ({args.role})", file=out)
    return 0


def cmd_user_list(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings(args.config)
    with open_store(settings.storage.database_url) as sessions, sessions() as session:
        rows = [
            {"name": u.name, "role": u.role.value, "created_at": u.created_at.isoformat()}
            for u in list_users(session)
        ]
    if args.format == "json":
        print(json.dumps(rows, indent=1), file=out)
    else:
        for row in rows:
            print(f"{row['name']:<24} {row['role']:<8} {row['created_at'][:19]}", file=out)
    return 0


def cmd_user_remove(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings(args.config)
    with open_store(settings.storage.database_url) as sessions, sessions.begin() as session:
        remove_user(session, args.name, actor="cli")
    print(f"user {args.name} removed", file=out)
    return 0


def cmd_audit(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings(args.config)
    since = _date_option(args.since, "--since")
    if since is not None:
        since = queries.aware(since)
    with open_store(settings.storage.database_url) as sessions, sessions() as session:
        rows = [
            {"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "detail": e.detail}
            for e in audit.events(session, since)
        ]
    if args.format == "json":
        print(json.dumps(rows, indent=1), file=out)
    else:
        for row in rows:
            print(
                f"{row['at'][:19]}  {row['actor']:<12} {row['action']:<12} {row['detail']}",
                file=out,
            )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line; ``--config`` and ``-v`` are accepted before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS everywhere: an option given before or after the command is set once, and
    # one not given is not set at all (main() supplies the defaults).
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="TOML configuration file (default: config/ecg2age.toml if present)",
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )
    parser = argparse.ArgumentParser(
        prog="ecg2age-dicom",
        description="Score resting 12-lead DICOM ECGs with ECG2Age and file the result as an SR.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser(
        "inspect", help="decode ECG files and show what the model would receive", parents=[common]
    )
    inspect.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="DICOM files or directories (searched recursively)",
    )
    inspect.add_argument("--format", choices=("table", "json"), default="table")
    inspect.set_defaults(handler=cmd_inspect)

    predict = commands.add_parser("predict", help="predict ages for ECG files", parents=[common])
    predict.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="files or folders (recursively)"
    )
    predict.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="json: JSON Lines"
    )
    predict.add_argument(
        "--output", type=Path, help="append the rows to this file (default: standard output)"
    )
    predict.add_argument("--resume", action="store_true", help="skip the files already in --output")
    predict.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="processes decoding files (default 0: one per CPU; 1: none beside the model)",
    )
    predict.add_argument("--card", type=Path, help="model card (default: [model] card)")
    predict.add_argument(
        "--sr-dir",
        "--out-dir",
        dest="sr_dir",
        type=Path,
        default=None,
        help="write each ECG's report objects ([report] outputs: SR, PDF, image) into this folder",
    )
    predict.set_defaults(handler=cmd_predict)

    model = commands.add_parser(
        "model", help="model cards: info, fetch, verify, train, evaluate", parents=[common]
    )
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    actions = {
        "info": (cmd_model_info, "show the card, its metrics and the file's state"),
        "fetch": (cmd_model_fetch, "download the card's weights (resumable, sha256-checked)"),
        "verify": (
            cmd_model_verify,
            "check sha256, the signature, pydicom's sample and the output transform on real ECGs",
        ),
        "evaluate": (cmd_model_evaluate, "measure on PTB-XL folds 9-10 and CODE-15%"),
    }
    for name, (handler, text) in actions.items():
        action = model_commands.add_parser(name, help=text, parents=[common])
        action.add_argument("--card", type=Path, help="model card (default: [model] card)")
        action.set_defaults(handler=handler)
        if name == "info":
            action.add_argument("--format", choices=("table", "json"), default="table")
        if name == "evaluate":
            action.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
            action.add_argument(
                "--no-write",
                action="store_true",
                help="print only; leave the card and plots unchanged",
            )
    train = model_commands.add_parser(
        "train", help="train the default model (ECG2Age-PTBXL)", parents=[common]
    )
    train.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    train.add_argument("--out", type=Path, default=Path("model_zoo/ECG2Age-PTBXL"))
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--seed", type=int, default=20261128)
    train.add_argument("--version", default="1.0.0")
    train.add_argument("--train-folds", type=int, nargs="+", default=[1, 2, 3, 4])
    train.add_argument(
        "--validation-folds", type=int, nargs="+", default=[5], help="early stopping only"
    )
    train.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: default)")
    train.add_argument(
        "--limit-per-fold", type=int, default=None, help="first N records of each fold (smoke runs)"
    )
    train.set_defaults(handler=cmd_model_train)

    results = commands.add_parser(
        "results", help="list received ECGs and their outcome", parents=[common]
    )
    results.add_argument("--format", choices=("table", "json", "csv"), default="table")
    results.add_argument("--limit", type=int, default=100)
    results.add_argument(
        "--status",
        choices=("received", "processing", "predicted", "failed", "delivered", "delivery_failed"),
    )
    results.set_defaults(handler=cmd_results)

    database = commands.add_parser("db", help="database maintenance", parents=[common])
    database_commands = database.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    database_commands.add_parser(
        "upgrade", help="apply the schema migrations", parents=[common]
    ).set_defaults(handler=cmd_db_upgrade)

    user = commands.add_parser("user", help="users of the web console", parents=[common])
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    adding = user_commands.add_parser("add", help="add a user", parents=[common])
    adding.add_argument("name")
    adding.add_argument("--role", choices=("admin", "viewer"), required=True)
    adding.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    adding.set_defaults(handler=cmd_user_add)
    listing = user_commands.add_parser("list", help="list the users", parents=[common])
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(handler=cmd_user_list)
    removing = user_commands.add_parser("remove", help="remove a user", parents=[common])
    removing.add_argument("name")
    removing.set_defaults(handler=cmd_user_remove)

    trail = commands.add_parser("audit", help="the audit trail", parents=[common])
    trail.add_argument("--since", help="from this date (YYYY-MM-DD) on")
    trail.add_argument("--format", choices=("table", "json"), default="table")
    trail.set_defaults(handler=cmd_audit)

    resend = commands.add_parser(
        "resend", help="queue reports for delivery again", parents=[common]
    )
    resend.add_argument(
        "--status", choices=("delivery_failed", "delivered"), default="delivery_failed"
    )
    resend.add_argument("--sop", help="only this ECG's or SR's SOP Instance UID")
    resend.set_defaults(handler=cmd_resend)

    backfill = commands.add_parser(
        "backfill",
        help="retrieve and score the ECGs a PACS holds ([[sources]]); the service scores them",
        parents=[common],
    )
    backfill.add_argument("--source", required=True, help="a [[sources]] name")
    backfill.add_argument("--since", help="studies from this date (YYYY-MM-DD) on")
    backfill.add_argument("--until", help="studies up to this date (YYYY-MM-DD), included")
    backfill.add_argument(
        "--dry-run", action="store_true", help="query only: count what would be retrieved"
    )
    backfill.set_defaults(handler=cmd_backfill)

    serve = commands.add_parser("serve", help="run the DICOM service", parents=[common])
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of ``ecg2age-dicom``; returns the exit code."""
    args = build_parser().parse_args(argv)
    args.config = getattr(args, "config", None)
    args.verbose = getattr(args, "verbose", False)
    logs.configure(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.handler(args, out or sys.stdout))
    except ConfigError as exc:
        print(f"ecg2age-dicom: {exc.reason}", file=sys.stderr)
        return 2
    except (ModelError, UserError) as exc:
        print(f"ecg2age-dicom: {exc.reason}", file=sys.stderr)
        return 1
