"""The console's 12-lead trace: the report page's layout (:mod:`ecg2age_dicom.pdf.page`) as
inline SVG.

The same 3 x 4 leads of 2.5 s and 10 s lead II rhythm strip, at 25 mm/s and 10 mm/mV on a
1 mm / 5 mm grid, a 1 mV calibration pulse per row, derived leads marked ``*``. The drawing is
in units of 0.01 mm (1 µV at 10 mm/mV), one polyline per segment: the browser scales it to
the page's width. Pure: the markup holds only numbers and lead names, nothing a peer sent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ecg2age_dicom.pdf.page import (
    GRID_BOTTOM_MM,
    GRID_WIDTH_MM,
    PAIR_PITCH,
    PULSE_MM,
    drawn_segments,
    grid_top_mm,
    label_positions,
    row_baseline_mm,
)

UNITS_PER_MM = 100
_PULSE = "M0 0 h100 v-1000 h500 v1000 h100"  # 1 mV, 200 ms (y grows downwards)


def _grid(width: int, height: int) -> str:
    small, large = UNITS_PER_MM, 5 * UNITS_PER_MM
    return (
        "<defs>"
        f'<pattern id="mm" width="{small}" height="{small}" patternUnits="userSpaceOnUse">'
        f'<path d="M{small} 0 V{small} H0" fill="none" stroke="#f5caca" stroke-width="12"/>'
        "</pattern>"
        f'<pattern id="mm5" width="{large}" height="{large}" patternUnits="userSpaceOnUse">'
        f'<rect width="{large}" height="{large}" fill="url(#mm)"/>'
        f'<path d="M{large} 0 V{large} H0" fill="none" stroke="#e59a9a" stroke-width="30"/>'
        "</pattern>"
        "</defs>"
        f'<rect width="{width}" height="{height}" fill="url(#mm5)"/>'
    )


def trace_svg(signal_uv: np.ndarray, leads_derived: Sequence[str]) -> str:
    """SVG markup of the standard ECG ``signal_uv`` (10 s at 500 Hz, (5000, 12) µV in
    :data:`~ecg2age_dicom.waveform.LEADS` order)."""
    top = grid_top_mm()
    width = round((PULSE_MM + GRID_WIDTH_MM) * UNITS_PER_MM)
    height = round((top - GRID_BOTTOM_MM) * UNITS_PER_MM)

    def at(x_mm: float, y_mm: float) -> str:  # page mm (y upwards) to SVG units
        return f"{round(x_mm * UNITS_PER_MM)},{round((top - y_mm) * UNITS_PER_MM)}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        'class="trace" role="img" aria-label="12-lead ECG, 25 mm/s, 10 mm/mV">',
        _grid(width, height),
        '<g fill="none" stroke="#000" stroke-width="25" stroke-linejoin="round">',
    ]
    for row in range(4):
        parts.append(f'<path transform="translate({at(1.0, row_baseline_mm(row))})" d="{_PULSE}"/>')
    for left_mm, row, drawn in drawn_segments(signal_uv, PULSE_MM):
        x = np.arange(drawn.size) * PAIR_PITCH
        points = " ".join(f"{a},{-b}" for a, b in zip(x.tolist(), drawn.tolist(), strict=True))
        parts.append(
            f'<polyline class="lead" transform="translate({at(left_mm, row_baseline_mm(row))})" '
            f'points="{points}"/>'
        )
    parts.append('</g><g font-family="sans-serif" font-size="300" font-weight="bold">')
    for lead, x_mm, y_mm in label_positions(PULSE_MM):
        label = lead + ("*" if lead in leads_derived else "")
        parts.append(f'<text transform="translate({at(x_mm, y_mm)})">{label}</text>')
    parts.append("</g></svg>")
    return "".join(parts)
