"""The report page's fast path: a page drawn once by ReportLab with markers, filled per ECG.

ReportLab spends about 0.9 ms of CPU on each page's document (canvas, text objects, fonts,
objects, cross-reference table), the same for every page of one layout. A
:class:`PageTemplate` is a page drawn by :func:`~ecg2age_dicom.pdf.page.draw_page` with a
marker in place of each left-aligned text and of the trace layer, its content stream kept
uncompressed; :meth:`PageTemplate.fill` writes one ECG's texts (encoded and escaped as
ReportLab writes them) and traces into that stream, compresses it as ReportLab would
(:class:`~ecg2age_dicom.pdf.page.FastFlate`) and counts the stream's length and the
cross-reference table's offset again. :func:`render_page` leaves to ReportLab a page whose
texts need another font than the layout's (a name outside WinAnsi); the tests check that
both ways give the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from pydicom.dataset import Dataset
from reportlab.lib.rl_accel import escapePDF
from reportlab.pdfbase import pdfmetrics

from ecg2age_dicom.pdf.page import (
    FastFlate,
    PageResult,
    PageText,
    draw_page,
    page_texts,
    page_title,
    trace_layer,
)
from ecg2age_dicom.sr.report import AlgorithmDescription
from ecg2age_dicom.waveform import LEADS, STANDARD_HZ, STANDARD_SECONDS

_TRACES = "@@traces@@"
_XREF_ENTRY = re.compile(rb"(\d{10}) \d{5} n")


def _marker(index: int) -> str:
    return f"@@{index}@@"


def pdf_string(text: str, font_name: str) -> str | None:
    """``text`` as ReportLab writes it for a standard font (a PDF string of WinAnsi bytes),
    or None when ReportLab would set some of it in another font (or it is empty)."""
    font = pdfmetrics.getFont(font_name)
    if font._dynamicFont:
        return None
    runs = pdfmetrics.unicode2T1(text, [font, *font.substitutionFonts])
    if len(runs) != 1 or runs[0][0] is not font:
        return None
    return f"({escapePDF(runs[0][1])})"


class _Kept(FastFlate):
    """Leaves the stream as it is (the template's content stays readable) and keeps it."""

    content = b""

    def encode(self, text: str | bytes) -> bytes:
        self.content = text.encode() if isinstance(text, str) else text
        return self.content


@dataclass(frozen=True)
class PageTemplate:
    """A page's bytes cut around its content stream's length, its content stream (itself
    cut at its slots: the traces, then each left-aligned text) and the offset of its
    cross-reference table."""

    head: bytes  # up to the content stream's /Length value
    to_stream: bytes  # from there to the stream's data
    to_offset: bytes  # from the data's end to startxref's value
    tail: bytes  # after that value
    xref_after_stream: int  # bytes from the data's end to the cross-reference table
    pieces: tuple[str, ...]

    @classmethod
    def of(cls, layout: Sequence[PageText], title: str, paper: str) -> PageTemplate:
        """The template of pages with ``layout``'s fonts, sizes and places (its texts are
        not used, but for the right-aligned ones, which are kept)."""
        slots = [i for i, text in enumerate(layout) if not text.right_aligned]
        marked = list(layout)
        for index in slots:
            marked[index] = replace(layout[index], text=_marker(index))
        kept = _Kept()
        page = draw_page(marked, _TRACES, title, paper, flate=kept)
        content = kept.content
        if page.count(content) != 1:
            raise ValueError("the template page's content stream is not found once")
        start = page.index(content)
        end = start + len(content)
        head, _, length_on = page[:start].rpartition(b"/Length ")
        length, _, to_stream = length_on.partition(b"\n")
        # What follows the content stream: only the cross-reference table and trailer, whose
        # offsets (all before the stream) stay as they are.
        after = page[end:]
        xref_after_stream = after.index(b"\nxref\n") + 1
        to_offset, _, offset_on = after.partition(b"startxref\n")
        offset, _, tail = offset_on.partition(b"\n")
        offsets = [int(found) for found in _XREF_ENTRY.findall(after)]
        if (
            int(length) != len(content)
            or int(offset) != end + xref_after_stream
            or any(position >= start for position in offsets)
        ):
            raise ValueError("the template page's layout is not the one expected of ReportLab")
        pieces = [content.decode("ascii")]
        for token in (_TRACES, *(f"({_marker(index)})" for index in slots)):
            before, found, after_token = pieces[-1].partition(token)
            if not found:
                raise ValueError(f"the template page's content stream lacks {token}")
            pieces[-1:] = [before, after_token]
        return cls(
            head + b"/Length ",
            b"\n" + to_stream,
            to_offset + b"startxref\n",
            b"\n" + tail,
            xref_after_stream,
            tuple(pieces),
        )

    def fill(self, texts: Sequence[PageText], traces: str) -> bytes | None:
        """The page with ``traces`` and ``texts`` (the layout's), or None when one of its
        texts is not :func:`pdf_string`-able."""
        parts = [self.pieces[0], traces, self.pieces[1]]
        written = (text for text in texts if not text.right_aligned)
        for text, piece in zip(written, self.pieces[2:], strict=True):
            string = pdf_string(text.text, text.font)
            if string is None:
                return None
            parts += [string, piece]
        stream = FastFlate().encode("".join(parts))
        head = self.head + str(len(stream)).encode() + self.to_stream
        offset = len(head) + len(stream) + self.xref_after_stream
        return head + stream + self.to_offset + str(offset).encode() + self.tail


Layout = tuple[tuple[str, float, float, float, str, bool, bool], ...]
"""Each text's fields (:class:`PageText`'s order), its words left out unless right-aligned:
what a template depends on."""


@lru_cache(maxsize=16)
def _template(layout: Layout, title: str, paper: str) -> PageTemplate:
    return PageTemplate.of([PageText(*fields) for fields in layout], title, paper)


def _layout_of(texts: Sequence[PageText]) -> Layout:
    return tuple(
        (t.font, t.size, t.x, t.y, t.text if t.right_aligned else "", t.right_aligned, t.red)
        for t in texts
    )


def prepare(algorithm: AlgorithmDescription, paper: str) -> None:
    """Make the page's template now, not on the first ECG (with ReportLab's fonts and the
    trace layer's tables, about 0.1 s), from a blank page."""
    samples = round(STANDARD_HZ * STANDARD_SECONDS)
    blank = np.zeros((samples, len(LEADS)), dtype=np.float32)
    render_page(Dataset(), blank, (), PageResult(0.0, None, None, ()), algorithm, paper)


def render_page(
    header: Dataset,
    signal_uv: np.ndarray,
    leads_derived: Sequence[str],
    result: PageResult,
    algorithm: AlgorithmDescription,
    paper: str = "A4",
) -> bytes:
    """The report page as PDF bytes (:mod:`ecg2age_dicom.pdf.page`), from its template when
    its texts allow, else drawn by ReportLab: the same bytes either way.

    ``signal_uv``: 10 s at 500 Hz, (5000, 12) µV in :data:`~ecg2age_dicom.waveform.LEADS`
    order (the standard ECG of :func:`~ecg2age_dicom.waveform.to_model_input`).
    """
    texts = page_texts(header, leads_derived, result, algorithm, paper)
    traces = trace_layer(signal_uv)
    title = page_title(algorithm)
    if not any(pdfmetrics.getFont(text.font)._dynamicFont for text in texts):
        page = _template(_layout_of(texts), title, paper).fill(texts, traces)
        if page is not None:
            return page
    return draw_page(texts, traces, title, paper)
