"""Downloading a model card's weights: resumable, checked, and renamed into place atomically.

The file is written to ``<file>.part`` next to the card; an interrupted download resumes from
that part with an HTTP Range request; the sha256 is checked before the part is renamed to the
card's file, so a half or wrong file is never mistaken for the model.
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ecg2age_dicom.errors import ModelError
from ecg2age_dicom.model import ModelCard, sha256_of

ML4H_LFS_HINT = (
    "git clone --filter=blob:none --no-checkout https://github.com/broadinstitute/ml4h.git\n"
    "cd ml4h && git lfs install --local && "
    "git lfs pull --include 'model_zoo/ECG2Age/ECG2Age.keras'\n"
    "cp model_zoo/ECG2Age/ECG2Age.keras {folder}/"
)
CHUNK = 1 << 16


def progress_printer(stream: TextIO = sys.stderr) -> Callable[[int, int | None], None]:
    """A callback printing ``received / total`` bytes on one updating line."""

    def show(received: int, total: int | None) -> None:
        if total:
            filled = int(30 * received / total)
            bar = "#" * filled + "." * (30 - filled)
            stream.write(f"\r[{bar}] {received / 1e6:8.1f} / {total / 1e6:.1f} MB")
        else:
            stream.write(f"\r{received / 1e6:8.1f} MB")
        stream.flush()

    return show


def fetch(
    card: ModelCard,
    progress: Callable[[int, int | None], None] | None = None,
    timeout_s: float = 30.0,
) -> Path:
    """Download ``card.source_url`` to ``card.path`` and verify its sha256.

    Returns
    -------
    Path
        The model file (already present and correct: nothing is downloaded).

    Raises
    ------
    ModelError
        No source URL, the network cannot be reached (the message says how to get the file
        by hand), the server fails, or the downloaded file's sha256 is wrong (the part is
        deleted so that the next try starts clean).
    """
    target = card.path
    if target.is_file() and sha256_of(target) == card.sha256:
        return target
    if not card.source_url:
        raise ModelError(f"the card of {card.name} has no source_url to download from")
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(card.source_url)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if offset and response.status != 206:
                offset = 0  # the server ignored the range: start again
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length else None
            received = offset
            with open(part, "ab" if offset else "wb") as out:
                while block := response.read(CHUNK):
                    out.write(block)
                    received += len(block)
                    if progress:
                        progress(received, total)
                out.flush()
                os.fsync(out.fileno())
            if total is not None and received < total:
                raise ConnectionError(f"connection closed after {received} of {total} bytes")
    except urllib.error.HTTPError as exc:
        raise ModelError(f"download of {card.source_url} failed: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelError(
            f"cannot download {card.source_url} ({reason}); no network? "
            f"Get the file by hand with git lfs:\n{ML4H_LFS_HINT.format(folder=card.folder)}\n"
            f"({received_note(part)})"
        ) from None
    actual = sha256_of(part)
    if actual != card.sha256:
        part.unlink()
        raise ModelError(
            f"downloaded file has sha256 {actual}, the card says {card.sha256}; deleted it"
        )
    os.replace(part, target)
    return target


def received_note(part: Path) -> str:
    """What is kept of an interrupted download, for the error message."""
    if part.exists():
        return f"{part.stat().st_size} bytes kept in {part}; the next fetch resumes from there"
    return "nothing downloaded yet"
