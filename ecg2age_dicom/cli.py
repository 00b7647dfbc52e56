"""The ``ecg2age-dicom`` command: argument parsing and printing, nothing else.

Each sub-command is a small function that builds what it needs from the settings and the
stage modules, prints, and returns the process exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydicom.uid import UID

from ecg2age_dicom import __version__, waveform
from ecg2age_dicom.config import load_settings
from ecg2age_dicom.dicomfile import expand_paths, read_dataset
from ecg2age_dicom.errors import ConfigError, InvalidECG

MODEL_FS = 500
MODEL_SECONDS = 10.0


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
    name = waveform.ECG_WAVEFORM_SOP_CLASSES.get(uid) or UID(uid).name
    return name if name != uid else f"unknown SOP class {uid}"


def inspect_file(path: Path) -> InspectResult:
    """Decode one file and summarise it; a decoding failure is reported, not raised."""
    result = InspectResult(path=str(path))
    try:
        dataset = read_dataset(path)
        result.sop_class = sop_class_name(str(dataset.get("SOPClassUID", "")))
        result.sop_instance_uid = str(dataset.get("SOPInstanceUID", "")) or None
        ecg = waveform.decode(dataset)
    except InvalidECG as exc:
        result.error = exc.reason
        return result
    model_input = waveform.to_model_input(ecg, MODEL_FS, MODEL_SECONDS)
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
        ("sampling rate", f"{result.sampling_frequency:g} Hz (model input: {MODEL_FS} Hz)"),
        ("duration", f"{result.duration_s:.2f} s (model input: {MODEL_SECONDS:g} s)"),
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
    settings = load_settings(args.config)
    print(
        f"ecg2age-dicom {__version__}: configuration OK (listener would be "
        f"{settings.listener.ae_title} on {settings.listener.host}:{settings.listener.port}).\n"
        "The DICOM listener, pipeline and SR delivery are not built yet "
        "(issues: model runtime, store/pipeline/SR, network service); nothing to run.",
        file=out,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecg2age-dicom",
        description="Score resting 12-lead DICOM ECGs with ECG2Age and file the result as an SR.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML configuration file (default: config/ecg2age.toml if present)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser(
        "inspect", help="decode ECG files and show what the model would receive"
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

    serve = commands.add_parser("serve", help="run the DICOM service")
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of ``ecg2age-dicom``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        return int(args.handler(args, out or sys.stdout))
    except ConfigError as exc:
        print(f"ecg2age-dicom: {exc.reason}", file=sys.stderr)
        return 2
