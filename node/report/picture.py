"""The result picture's page: header, radiograph, magnified ROIs, results table, chart and statement.

Pure drawing with Pillow and the bundled DejaVu fonts; no DICOM is written here
(:mod:`node.report.sc` wraps the picture in an SC instance). The layout is a landscape
1920 x 1200 px page (short side >= 1024 px, legible on a reading-room monitor when fitted):

* header: report title, hand, patient identity (burned in so a screenshot cannot be
  mixed up with another patient's);
* left: the radiograph, cropped to the hand, with axes, the three ROIs and detected edges
  (:mod:`node.report.panels`; the hand outline is left out);
* middle: each ROI magnified (about 3x), shaft upright, with its edges and a 5 mm bar, so the
  reader can judge whether the edges sit on the cortex;
* right: per-bone table, combined result, DXR-BMD-vs-age chart, provenance, unused images;
* bottom: the statement that this is a computed estimate, not a DXA measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from analysis.result import BONE_NAMES, REASON_MESSAGES, AnalysisResult
from node.report.chart import ReferenceBand, draw_chart
from node.report.overlay import load_font, wrap_text
from node.report.panels import fit, hand_panel, roi_tile
from node.report.style import ACCENT, BACKGROUND, GRID, MUTED, TEXT, WHO_COLOURS, fmt

__all__ = ["PatientLine", "TrendLine", "UnusedImage", "compose_picture", "summary_lines", "table_rows", "trend_text"]

DISCLAIMER = "Computed estimate from a radiograph (digital X-ray radiogrammetry) \u2014 not a DXA measurement."
PAGE_SIZE_PX = (1920, 1200)
"""(width, height) of the picture."""
HAND_BOX_PX = (24, 92, 724, 1120)
"""(left, top, right, bottom) of the radiograph panel in the picture."""
ZOOM_BOX_PX = (744, 92, 1024, 1120)
"""(left, top, right, bottom) of the column of magnified measurement regions."""
MARGIN_PX = 24
"""Margin around the page's content."""
FOOTER_PX = 70
"""Height of the footer band holding the statement."""

SPACING_SOURCE_WORDS = {
    "PixelSpacing": "Pixel Spacing (calibrated at the patient)",
    "ImagerPixelSpacing": "Imager Pixel Spacing (at the detector, not corrected for magnification)",
    "ImagerPixelSpacing/magnification": "Imager Pixel Spacing / estimated magnification",
    "cli": "given by the operator",
}
"""How the picture names ``AnalysisResult.pixel_spacing_source``: its mm depend on it."""


@dataclass(frozen=True)
class UnusedImage:
    """An image of the study the report did not measure on, and why (one line)."""

    label: str
    reason: str


@dataclass(frozen=True)
class PatientLine:
    """What the header shows about the patient (already decoded strings)."""

    name: str = ""
    patient_id: str = ""
    sex: str = ""
    age: str = ""
    study_date: str = ""


def table_rows(result: AnalysisResult) -> list[tuple[str, ...]]:
    """Per-bone rows of the results table: bone, T (mm), W (mm), MCI, VPA (mm), profiles."""
    rows = []
    for name in BONE_NAMES:
        bone = result.bones.get(name)
        if bone is None:
            rows.append((f"MC {name}", "not analysed", "", "", "", ""))
        elif bone.status != "ok":
            reason = bone.message or REASON_MESSAGES.get(bone.reason or "", bone.reason or "")
            rows.append((f"MC {name}", f"not measured: {reason}", "", "", "", ""))
        else:
            rows.append((
                f"MC {name}",
                fmt(bone.cortical_thickness_mm, 2),
                fmt(bone.outer_width_mm, 2),
                fmt(bone.mci, 3),
                fmt(bone.vpa_mm, 2),
                f"{bone.profiles_used}/{bone.profiles_total}" if bone.profiles_total else "\u2013",
            ))
    return rows


def _scores_note(result: AnalysisResult) -> str | None:
    """Why a score is missing, verbatim from the analysis (one or two sentences)."""
    if result.scores_omitted_reason:
        return result.scores_omitted_reason
    if result.t_score is None and result.z_score is None:
        return "T- and Z-scores not given: no reference population is configured."
    return None


SCREENING_WORDS = {
    "normal": "DXR T-score \u2265 \u22121.0",
    "osteopenia": "DXR T-score \u22122.5 to \u22121.0: consider DXA",
    "osteoporosis": "DXR T-score \u2264 \u22122.5: consider DXA",
}
"""The screening category in words: WHO thresholds on a DXR estimate, not a WHO diagnosis (central DXA)."""


@dataclass(frozen=True)
class TrendLine:
    """The change since the patient's last result on this node (same hand)."""

    previous_date: str
    change_g_cm2: float
    change_percent: float
    significant: bool
    lsc_percent: float
    cv_percent: float


def trend_text(trend: TrendLine) -> str:
    date = trend.previous_date
    if len(date) == 8 and date.isdigit():
        date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    verdict = "exceeds" if trend.significant else "within"
    return (f"Change since {date or 'the last result'}: {fmt(trend.change_g_cm2, 3, signed=True)} g/cm\u00b2 "
            f"({fmt(trend.change_percent, 1, signed=True)} %), {verdict} the least significant change "
            f"{trend.lsc_percent:.2f} % (2.77 \u00d7 CV {trend.cv_percent:.2f} %)")


def _provisional_note(result: AnalysisResult) -> str | None:
    if result.reference_name and result.reference_provisional:
        return "PROVISIONAL reference: part of it is a model, not a measured table."
    return None


def summary_lines(result: AnalysisResult) -> list[str]:
    """The combined result as plain lines (the same words the picture draws)."""
    lines = [f"DXR-BMD {fmt(result.dxr_bmd_g_cm2, 3)} g/cm\u00b2"]
    if result.t_score is not None or result.z_score is not None:
        lines.append(f"T-score {fmt(result.t_score, 1, signed=True)}   Z-score {fmt(result.z_score, 1, signed=True)}")
    if _scores_note(result):
        lines.append(_scores_note(result))
    if _provisional_note(result):
        lines.append(_provisional_note(result))
    if result.who_category:
        lines.append(f"DXR screening category: {SCREENING_WORDS.get(result.who_category, result.who_category)}")
    lines.append(f"BHI {fmt(result.bhi, 2)}   mean MCI {fmt(result.mci, 3)}")
    if result.reduced_service:
        lines.append(f"Reduced service: {result.bones_measured} of {len(BONE_NAMES)} metacarpals measured")
    return lines


def compose_picture(
    image_bone_bright: np.ndarray,
    result: AnalysisResult,
    *,
    hand_label: str,
    unused: Sequence[UnusedImage] = (),
    reference_bands: Sequence[ReferenceBand] = (),
    reference_note: str | None = None,
    patient: PatientLine = PatientLine(),
    measured_label: str = "",
    earlier: Sequence[tuple[float, float]] = (),
    trend: TrendLine | None = None,
) -> Image.Image:
    """The full result picture, RGB, 1920 x 1200 px.

    Parameters
    ----------
    image_bone_bright : ndarray (rows, columns)
        The analysed image, bone bright; ROI coordinates in ``result`` refer to it.
    result : AnalysisResult
        A measured (``ok``) result.
    hand_label : str
        E.g. ``"left hand"``.
    unused : sequence of UnusedImage
        Images of the study this report did not use, with the reason.
    reference_bands : sequence of ReferenceBand
        The age-band reference for the patient's sex (empty: the chart says why there is none).
    reference_note : str, optional
        Why no reference curve is drawn (defaults to ``result.scores_omitted_reason``).
    patient : PatientLine
    measured_label : str
        Which image was measured (e.g. ``"series 1 image 1, DX PA"``).
    earlier : sequence of (age in years, DXR-BMD)
        The patient's earlier results of this hand from this node, oldest first (the trend line).
    trend : TrendLine, optional
        The change since the last of them and whether it exceeds the LSC.
    """
    width, height = PAGE_SIZE_PX
    page = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(page)
    _draw_header(draw, hand_label, patient)
    hand_box = HAND_BOX_PX
    panel = fit(hand_panel(image_bone_bright, result, max_side_px=1100),
                hand_box[2] - hand_box[0], hand_box[3] - hand_box[1])
    page.paste(panel, (hand_box[0] + (hand_box[2] - hand_box[0] - panel.width) // 2, hand_box[1]))
    _draw_zoom_column(page, draw, image_bone_bright, result)
    x0, x1 = ZOOM_BOX_PX[2] + 28, width - MARGIN_PX
    y = _draw_bone_table(draw, x0, x1, 100, result)
    y = _draw_combined(draw, x0, x1, y, result, trend)
    notes_top = _draw_notes(draw, x0, x1, result, unused, measured_label)
    chart_box = (x0, y + 10, x1, notes_top - 14)
    if chart_box[3] - chart_box[1] > 200:
        draw_chart(draw, chart_box, result, reference_bands, reference_note or result.scores_omitted_reason,
                   earlier=earlier, provisional=bool(result.reference_provisional))
    # footer: the statement
    footer_top = height - FOOTER_PX
    draw.rectangle((MARGIN_PX, footer_top, width - MARGIN_PX, height - 14), outline=ACCENT, width=3)
    draw.text((width / 2, (footer_top + height - 14) / 2), DISCLAIMER, font=load_font(28, bold=True),
              fill=ACCENT, anchor="mm")
    return page


def _draw_header(draw: ImageDraw.ImageDraw, hand_label: str, patient: PatientLine) -> None:
    """Title with the hand, and the patient's identity burned in (top right)."""
    width = PAGE_SIZE_PX[0]
    draw.text((MARGIN_PX, 18), f"DXR-BMD \u2014 {hand_label}", font=load_font(40, bold=True), fill=TEXT)
    who = [x for x in (patient.name, patient.patient_id and f"ID {patient.patient_id}",
                       " ".join(x for x in (patient.sex, patient.age) if x),
                       patient.study_date and f"study {patient.study_date}") if x]
    draw.text((width - MARGIN_PX, 30), "   ".join(who), font=load_font(26), fill=TEXT, anchor="ra")
    draw.line((MARGIN_PX, 80, width - MARGIN_PX, 80), fill=GRID, width=2)


def _draw_zoom_column(page: Image.Image, draw: ImageDraw.ImageDraw, image_bone_bright: np.ndarray,
                      result: AnalysisResult) -> None:
    """Magnified measurement regions (middle): what the edges were found on, shaft vertical."""
    zx0, zy0, zx1, zy1 = ZOOM_BOX_PX
    label_h = 34
    tile_h = (zy1 - zy0) // len(BONE_NAMES) - label_h
    for k, name in enumerate(BONE_NAMES):
        top = zy0 + k * (tile_h + label_h)
        bone = result.bones.get(name)
        measured = bone is not None and bone.status == "ok"
        draw.text((zx0, top), f"MC {name}" + ("" if measured else " \u2014 not measured"),
                  font=load_font(24, bold=True), fill=TEXT if measured else WHO_COLOURS["osteopenia"])
        if measured:
            page.paste(roi_tile(image_bone_bright, bone, pixel_spacing_mm=result.pixel_spacing_mm,
                                tile_px=(zx1 - zx0, tile_h - 6)), (zx0, top + label_h))


def _draw_bone_table(draw: ImageDraw.ImageDraw, x0: int, x1: int, y: int, result: AnalysisResult) -> int:
    """The per-bone results table (right column) from ``y`` down; returns the y below it."""
    draw.text((x0, y), "Metacarpals (mid-shaft ROIs)", font=load_font(26, bold=True), fill=TEXT)
    y += 42
    columns = [("", 0), ("T mm", 125), ("W mm", 245), ("MCI", 365), ("VPA mm", 485), ("profiles", 625)]
    head_font, cell_font = load_font(22, bold=True), load_font(26)
    for title, dx in columns:
        draw.text((x0 + dx, y), title, font=head_font, fill=MUTED)
    y += 34
    draw.line((x0, y, x1, y), fill=GRID, width=1)
    y += 8
    for row in table_rows(result):
        if row[2] == "" and row[1]:
            draw.text((x0, y), row[0], font=load_font(26, bold=True), fill=TEXT)
            for k, line in enumerate(wrap_text(draw, row[1], load_font(22), x1 - x0 - 125)[:2]):
                draw.text((x0 + 125, y + 2 + 28 * k), line, font=load_font(22), fill=WHO_COLOURS["osteopenia"])
            y += 62
            continue
        for (title, dx), cell in zip(columns, row):
            draw.text((x0 + dx, y), cell, font=load_font(26, bold=not title) if not title else cell_font, fill=TEXT)
        y += 40
    draw.line((x0, y, x1, y), fill=GRID, width=1)
    return y + 16


def _draw_combined(draw: ImageDraw.ImageDraw, x0: int, x1: int, y: int, result: AnalysisResult,
                   trend: TrendLine | None = None) -> int:
    """DXR-BMD, screening category, scores (or why not), trend, indices; returns the y below them."""
    draw.text((x0, y), f"DXR-BMD  {fmt(result.dxr_bmd_g_cm2, 3)} g/cm\u00b2", font=load_font(40, bold=True), fill=TEXT)
    y += 56
    if result.who_category:
        colour = WHO_COLOURS.get(result.who_category.lower(), TEXT)
        draw.text((x0, y), SCREENING_WORDS.get(result.who_category, result.who_category),
                  font=load_font(28, bold=True), fill=colour)
        y += 40
    if result.t_score is not None or result.z_score is not None:
        draw.text((x0, y), f"T-score  {fmt(result.t_score, 1, signed=True)}      "
                           f"Z-score  {fmt(result.z_score, 1, signed=True)}", font=load_font(32, bold=True), fill=TEXT)
        y += 46
    note = _scores_note(result)
    if note:
        for line in wrap_text(draw, note, load_font(22), x1 - x0)[:3]:
            draw.text((x0, y), line, font=load_font(22), fill=WHO_COLOURS["osteopenia"])
            y += 29
    if _provisional_note(result):
        draw.text((x0, y), _provisional_note(result), font=load_font(22, bold=True), fill=WHO_COLOURS["osteopenia"])
        y += 30
    if result.reference_name:
        for line in wrap_text(draw, f"Reference: {result.reference_name}", load_font(20), x1 - x0)[:2]:
            draw.text((x0, y), line, font=load_font(20), fill=MUTED)
            y += 26
    if trend is not None:
        for line in wrap_text(draw, trend_text(trend), load_font(22, bold=trend.significant), x1 - x0)[:2]:
            draw.text((x0, y), line, font=load_font(22, bold=trend.significant),
                      fill=ACCENT if trend.significant else TEXT)
            y += 29
    draw.text((x0, y + 4), f"BHI {fmt(result.bhi, 2)}     mean MCI {fmt(result.mci, 3)}", font=load_font(24),
              fill=TEXT)
    y += 40
    if result.reduced_service:
        draw.text((x0, y), f"Reduced service: {result.bones_measured} of {len(BONE_NAMES)} metacarpals measured",
                  font=load_font(24, bold=True), fill=WHO_COLOURS["osteopenia"])
        y += 36
    return y


def _draw_notes(draw: ImageDraw.ImageDraw, x0: int, x1: int, result: AnalysisResult,
                unused: Sequence[UnusedImage], measured_label: str) -> int:
    """Provenance and unused images at the bottom of the right column; returns their top y."""
    notes = [
        (f"Measured on: {measured_label}   \u00b7   " if measured_label else "")
        + f"analysis version {result.analysis_version}",
        f"Pixel spacing {fmt(result.pixel_spacing_mm, 3)} mm: "
        f"{SPACING_SOURCE_WORDS.get(result.pixel_spacing_source or '', result.pixel_spacing_source or 'source unknown')}",
    ]
    notes = [n for n in notes if n]
    notes += [f"Not used: {item.label} \u2014 {item.reason}" for item in unused]
    note_font = load_font(20)
    note_lines = [line for note in notes for line in wrap_text(draw, note, note_font, x1 - x0)][:6]
    notes_top = PAGE_SIZE_PX[1] - FOOTER_PX - 10 - 26 * len(note_lines)
    for k, line in enumerate(note_lines):
        draw.text((x0, notes_top + 26 * k), line, font=note_font, fill=MUTED)
    return notes_top
