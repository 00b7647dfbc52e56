"""Running ``ecg2age-dicom`` in this process, as the CLI tests do."""

from __future__ import annotations

import io

from ecg2age_dicom.cli import main


def run(*argv: str) -> tuple[int, str]:
    """The exit code and standard output of ``ecg2age-dicom ARGV...``."""
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()
