"""The DXR-BMD-against-age chart of the picture: reference bands for the patient's sex, and the patient."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

from analysis.result import AnalysisResult
from node.report.overlay import load_font, wrap_text
from node.report.style import ACCENT, BAND_1SD, BAND_25SD, GRID, MINUS, MUTED, TEXT

__all__ = ["ReferenceBand", "draw_chart"]

AGE_RANGE_YEARS = (20.0, 90.0)
"""The chart's age axis (years)."""


@dataclass(frozen=True)
class ReferenceBand:
    """DXR-BMD reference of one age band: mean and SD in g/cm2, ages in years."""

    age_from_years: float
    age_to_years: float
    mean_g_cm2: float
    sd_g_cm2: float
    kind: str = "age_matched"
    """``age_matched`` (Z-score reference) or ``young_adult`` (T-score reference)."""


def draw_chart(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    result: AnalysisResult,
    bands: Sequence[ReferenceBand],
    omitted_reason: str | None,
    earlier: Sequence[tuple[float, float]] = (),
    provisional: bool = False,
) -> None:
    """DXR-BMD (g/cm2) against age (years): reference mean with +/-1 and +/-2 SD, the patient's
    earlier results (``earlier``: (age, BMD), oldest first) joined to today's point."""
    left, top, right, bottom = box
    label_font, tick_font = load_font(22), load_font(19)
    draw.text((left, top), "DXR-BMD (g/cm\u00b2) against age (years)", font=load_font(24, bold=True), fill=TEXT)
    plot = (left + 60, top + 44, right - 12, bottom - 34)
    px0, py0, px1, py1 = plot
    age_lo, age_hi = AGE_RANGE_YEARS
    values = [b.mean_g_cm2 + k * b.sd_g_cm2 for b in bands for k in (-2.5, 2.5)] + [v for _, v in earlier]
    if result.dxr_bmd_g_cm2 is not None:
        values.append(result.dxr_bmd_g_cm2)
    bmd_lo = math.floor((min(values, default=0.3) - 0.05) * 10) / 10
    bmd_hi = math.ceil((max(values, default=0.7) + 0.05) * 10) / 10

    def xy(age: float, bmd: float) -> tuple[float, float]:
        x = px0 + (min(max(age, age_lo), age_hi) - age_lo) / (age_hi - age_lo) * (px1 - px0)
        y = py1 - (bmd - bmd_lo) / (bmd_hi - bmd_lo) * (py1 - py0)
        return x, y

    matched = [b for b in bands if b.kind != "young_adult"]
    young = next((b for b in bands if b.kind == "young_adult"), None)
    # Age-matched bands where configured; else the young-adult band across all ages (a T-score
    # reference applies at every age).
    drawn = matched or ([ReferenceBand(age_lo, age_hi, young.mean_g_cm2, young.sd_g_cm2, "young_adult")]
                        if young else [])
    for band in drawn:
        a0, a1 = max(band.age_from_years, age_lo), min(band.age_to_years, age_hi)
        if a1 <= a0:
            continue
        for k, colour in ((2.0, BAND_25SD), (1.0, BAND_1SD)):
            x0, y0 = xy(a0, band.mean_g_cm2 + k * band.sd_g_cm2)
            x1, y1 = xy(a1, band.mean_g_cm2 - k * band.sd_g_cm2)
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        draw.line((xy(a0, band.mean_g_cm2), xy(a1, band.mean_g_cm2)), fill=(150, 230, 160), width=2)
    if young is not None:
        # The T-score scale across all ages: young-adult mean (T = 0) and T = -2.5.
        for t, text in ((0.0, "T = 0"), (-2.5, f"T = {MINUS}2.5")):
            y_t = xy(age_lo, young.mean_g_cm2 + t * young.sd_g_cm2)[1]
            for xa in np.arange(px0, px1, 16):
                draw.line((xa, y_t, min(xa + 8, px1), y_t), fill=(150, 230, 160) if t == 0 else (255, 140, 120),
                          width=2)
            draw.text((px1 - 6, y_t - 3), text, font=tick_font, fill=TEXT, anchor="rb",
                      stroke_width=3, stroke_fill=(0, 0, 0))
    kind = ("age-matched" if matched else "young-adult") if drawn else None
    if kind and provisional:
        kind += " (provisional)"
    _draw_axes(draw, plot, xy, (bmd_lo, bmd_hi), tick_font, drawn_kind=kind)
    if earlier and result.dxr_bmd_g_cm2 is not None and result.age_years is not None:
        line = [xy(a, v) for a, v in earlier] + [xy(result.age_years, result.dxr_bmd_g_cm2)]
        draw.line(line, fill=ACCENT, width=3)
        for x, y in line[:-1]:
            draw.ellipse((x - 6, y - 6, x + 6, y + 6), fill=(255, 255, 255), outline=ACCENT, width=3)
    _draw_patient(draw, plot, xy, result, tick_font)
    if not bands:
        reason = omitted_reason or "no reference population configured"
        lines = wrap_text(draw, f"No reference curve: {reason}", label_font, px1 - px0 - 40)
        for k, line in enumerate(lines):
            draw.text(((px0 + px1) / 2, (py0 + py1) / 2 + 28 * (k - len(lines) / 2)), line,
                      font=label_font, fill=TEXT, anchor="mt")


def _draw_axes(draw: ImageDraw.ImageDraw, plot: tuple[float, float, float, float], xy: Callable,
               bmd_range: tuple[float, float], tick_font, *, drawn_kind: str | None) -> None:
    """Grid, ticks, frame and (when a band is drawn, ``drawn_kind`` names it) the legend."""
    px0, py0, px1, py1 = plot
    bmd_lo, bmd_hi = bmd_range
    age_lo = AGE_RANGE_YEARS[0]
    # axes, grid and ticks
    for tick in np.arange(bmd_lo, bmd_hi + 1e-9, 0.1):
        y = xy(age_lo, tick)[1]
        draw.line((px0, y, px1, y), fill=GRID, width=1)
        draw.text((px0 - 8, y), f"{tick:.1f}", font=tick_font, fill=MUTED, anchor="rm")
    for age in range(20, 91, 10):
        x = xy(age, bmd_lo)[0]
        draw.line((x, py1, x, py1 + 6), fill=MUTED, width=1)
        draw.text((x, py1 + 9), str(age), font=tick_font, fill=MUTED, anchor="mt")
    draw.rectangle(plot, outline=MUTED, width=1)
    # legend
    lx, ly = px0 + 10, py0 + 8
    if drawn_kind:
        which = drawn_kind
        for colour, text in ((BAND_1SD, f"{which} mean \u00b11 SD"), (BAND_25SD, "\u00b12 SD")):
            draw.rectangle((lx, ly + 3, lx + 22, ly + 19), fill=colour, outline=(150, 230, 160))
            draw.text((lx + 30, ly), text, font=tick_font, fill=TEXT)
            lx += 40 + draw.textlength(text, font=tick_font) + 12


def _draw_patient(draw: ImageDraw.ImageDraw, plot: tuple[float, float, float, float], xy: Callable,
                  result: AnalysisResult, tick_font) -> None:
    """The patient's point (or a line across when the age is unknown)."""
    px0, _, px1, _ = plot
    age_lo = AGE_RANGE_YEARS[0]
    # the patient
    if result.dxr_bmd_g_cm2 is not None and result.age_years is not None:
        x, y = xy(result.age_years, result.dxr_bmd_g_cm2)
        draw.ellipse((x - 9, y - 9, x + 9, y + 9), fill=ACCENT, outline=(0, 0, 0), width=2)
        draw.text((x + 14, y - 8), "patient", font=tick_font, fill=ACCENT, anchor="lb",
                  stroke_width=3, stroke_fill=(0, 0, 0))
    elif result.dxr_bmd_g_cm2 is not None:
        y = xy(age_lo, result.dxr_bmd_g_cm2)[1]
        draw.line((px0, y, px1, y), fill=ACCENT, width=2)
        draw.text((px1 - 6, y - 4), "patient (age unknown)", font=tick_font, fill=ACCENT, anchor="rb")
