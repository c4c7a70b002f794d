"""The Secondary Capture result picture: hand with ROIs, results table, DXR-BMD-vs-age chart.

Pure drawing with Pillow and the bundled DejaVu fonts; no DICOM is written here
(``node/outputs.py`` wraps the picture in an SC instance). The layout is a landscape
1920 x 1200 px page (short side >= 1024 px, legible on a reading-room monitor when fitted):

* header: report title, hand, patient identity (burned in so a screenshot cannot be
  mixed up with another patient's);
* left: the radiograph, cropped to the hand, with axes, the three ROIs and detected edges
  (``node.overlay``; the hand outline is left out);
* middle: each ROI magnified (about 3x), shaft upright, with its edges and a 5 mm bar, so the
  reader can judge whether the edges sit on the cortex;
* right: per-bone table, combined result, DXR-BMD-vs-age chart, provenance, unused images;
* bottom: the statement that this is a computed estimate, not a DXA measurement.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
import numpy as np
from PIL import Image, ImageDraw

from analysis.calibration import image_from_dataset
from analysis.result import BONE_NAMES, REASON_MESSAGES, AnalysisResult
from node.overlay import INNER_EDGE_COLOUR, OUTER_EDGE_COLOUR, draw_overlay
from node.overlay import load_font as _font
from node.overlay import wrap_text as _wrap

log = logging.getLogger(__name__)

DISCLAIMER = "Computed estimate from a radiograph (digital X-ray radiogrammetry) \u2014 not a DXA measurement."
PAGE_SIZE_PX = (1920, 1200)
"""(width, height) of the picture."""
HAND_BOX_PX = (24, 92, 724, 1120)
"""(left, top, right, bottom) of the radiograph panel in the picture."""
ZOOM_BOX_PX = (744, 92, 1024, 1120)
"""(left, top, right, bottom) of the column of magnified measurement regions."""

BACKGROUND = (0, 0, 0)
TEXT = (235, 235, 235)
MUTED = (165, 165, 165)
ACCENT = (255, 214, 10)  # the ROI yellow of the overlay, also used for the patient's point
GRID = (70, 70, 70)
BAND_1SD = (40, 95, 60)
BAND_25SD = (28, 52, 38)
WHO_COLOURS = {"normal": (120, 200, 120), "osteopenia": (255, 190, 60), "osteoporosis": (255, 95, 80)}
MINUS = "\u2212"


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
class ReferenceBand:
    """DXR-BMD reference of one age band: mean and SD in g/cm2, ages in years."""

    age_from_years: float
    age_to_years: float
    mean_g_cm2: float
    sd_g_cm2: float
    kind: str = "age_matched"
    """``age_matched`` (Z-score reference) or ``young_adult`` (T-score reference)."""


@dataclass(frozen=True)
class PatientLine:
    """What the header shows about the patient (already decoded strings)."""

    name: str = ""
    patient_id: str = ""
    sex: str = ""
    age: str = ""
    study_date: str = ""


# --- the radiograph --------------------------------------------------------------------------
def bone_bright_image(dataset) -> np.ndarray:
    """The dataset's pixels as float64, bone bright (MONOCHROME1 inverted).

    Uses ``analysis.calibration.image_from_dataset`` so the picture shows exactly what was
    measured; falls back to the raw pixels (Modality LUT not applied) if that refuses the dataset.
    """
    try:
        return np.asarray(image_from_dataset(dataset).image, dtype=np.float64)
    except Exception:  # noqa: BLE001 - the picture must still be drawn; plain conversion below
        pass
    pixels = np.asarray(dataset.pixel_array, dtype=np.float64)
    if pixels.ndim == 3:  # colour or multi-frame: luminance / first frame
        pixels = pixels.mean(axis=-1) if pixels.shape[-1] == 3 else pixels[0]
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = pixels.max() - pixels
    return pixels


def _grey_to_rgb(image_bone_bright: np.ndarray, max_side_px: int) -> tuple[Image.Image, float]:
    low, high = np.percentile(image_bone_bright, [0.5, 99.5])
    scaled = np.clip((image_bone_bright - low) / max(high - low, 1e-9), 0.0, 1.0)
    picture = Image.fromarray((scaled * 255).astype(np.uint8), mode="L").convert("RGB")
    scale = min(1.0, max_side_px / max(picture.size))
    if scale < 1:
        picture = picture.resize(
            (max(1, round(picture.width * scale)), max(1, round(picture.height * scale))), Image.LANCZOS
        )
    return picture, scale


def _plain_overlay(image_bone_bright: np.ndarray, result: AnalysisResult, max_side_px: int) -> Image.Image:
    """Radiograph with ROI outlines and edges; used only if ``node.overlay.draw_overlay`` fails."""
    picture, scale = _grey_to_rgb(image_bone_bright, max_side_px)
    draw = ImageDraw.Draw(picture)
    for name, bone in result.bones.items():
        if bone.status != "ok" or len(bone.roi_polygon_px) < 3:
            continue
        # (column, row) pixel centres -> scaled canvas coordinates
        points = [((c + 0.5) * scale, (r + 0.5) * scale) for c, r in bone.roi_polygon_px]
        draw.line(points + points[:1], fill=ACCENT, width=3)
        for edge in bone.edges_px.values():
            if len(edge) > 1:
                draw.line([((c + 0.5) * scale, (r + 0.5) * scale) for c, r in edge], fill=(0, 220, 255), width=1)
        # label just above the ROI's top corner, clear of the neighbouring ROIs
        top_x, top_y = min(points, key=lambda p: p[1])
        draw.text((top_x, top_y - 6), name, font=_font(26, bold=True), fill=ACCENT, anchor="mb",
                  stroke_width=2, stroke_fill=(0, 0, 0))
    return picture


def _hand_crop_box(result: AnalysisResult, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(c0, r0, c1, r1) pixel box around the hand, or the whole image when nothing was located.

    From the hand outline when there is one, else from the metacarpal axes grown to a hand's
    size (fingers and wrist reach about one metacarpal length beyond each end).
    """
    rows, cols = shape
    points = list(result.hand_outline_px)
    if len(points) < 3:
        for axis in result.metacarpal_axes_px.values():
            if len(axis) >= 2:
                (bc, br), (hc, hr) = axis[0], axis[1]
                points += [(bc - (hc - bc), br - (hr - br)), (hc + 1.6 * (hc - bc), hr + 1.6 * (hr - br))]
                points += [axis[0], axis[1]]
        for bone in result.bones.values():
            points += list(bone.roi_polygon_px)
    if len(points) < 3:
        return 0, 0, cols, rows
    pts = np.asarray(points, dtype=np.float64)
    (cmin, rmin), (cmax, rmax) = pts.min(axis=0), pts.max(axis=0)
    pad = 0.08 * max(cmax - cmin, rmax - rmin) + 10
    c0, r0 = max(0, int(cmin - pad)), max(0, int(rmin - pad))
    c1, r1 = min(cols, int(cmax + pad) + 1), min(rows, int(rmax + pad) + 1)
    if (c1 - c0) * (r1 - r0) > 0.8 * rows * cols or c1 - c0 < 32 or r1 - r0 < 32:
        return 0, 0, cols, rows  # cropping would gain little (or the box is implausible)
    return c0, r0, c1, r1


def _shifted(result: AnalysisResult, dc: float, dr: float) -> AnalysisResult:
    """A copy of ``result`` with every (column, row) point moved by (-dc, -dr)."""
    def move(points):
        return [(c - dc, r - dr) for c, r in points]

    bones = {
        name: dataclasses.replace(
            bone,
            roi_center_px=None if bone.roi_center_px is None else move([bone.roi_center_px])[0],
            roi_polygon_px=move(bone.roi_polygon_px),
            axis_px=move(bone.axis_px),
            edges_px={key: move(edge) for key, edge in bone.edges_px.items()},
        )
        for name, bone in result.bones.items()
    }
    return result.replace(
        bones=bones,
        metacarpal_axes_px={name: move(axis) for name, axis in result.metacarpal_axes_px.items()},
        hand_outline_px=move(result.hand_outline_px),
    )


def hand_panel(image_bone_bright: np.ndarray, result: AnalysisResult, max_side_px: int = 1024) -> Image.Image:
    """The hand, cropped to it, with ROIs and edges (``node.overlay.draw_overlay``)."""
    c0, r0, c1, r1 = _hand_crop_box(result, image_bone_bright.shape)
    image = image_bone_bright[r0:r1, c0:c1]
    # The hand outline is a reviewer's aid; on the radiologist's picture it only hides anatomy.
    shown = _shifted(result, c0, r0).replace(hand_outline_px=[])
    try:
        return draw_overlay(image, shown, max_side_px=max_side_px).convert("RGB")
    except Exception as exc:  # noqa: BLE001 - still show the ROIs, drawn plainly
        log.warning("event=overlay_failed error=%r", f"{type(exc).__name__}: {exc}")
        return _plain_overlay(image, shown, max_side_px)


def roi_tile(
    image_bone_bright: np.ndarray,
    bone,
    *,
    pixel_spacing_mm: float | None,
    tile_px: tuple[int, int],
    upsample: int = 3,
) -> Image.Image:
    """A magnified view of one bone's measurement region with its detected edges.

    The crop is windowed on its own grey levels (so the cortex shows), drawn ``upsample``
    times larger than the source, rotated so the shaft runs vertically (head up), and fitted
    into ``tile_px`` (width, height). A 5 mm scale bar is drawn when the spacing is known.
    """
    tile_w, tile_h = tile_px
    tile = Image.new("RGB", (tile_w, tile_h), BACKGROUND)
    polygon = np.asarray(bone.roi_polygon_px, dtype=np.float64)  # (column, row)
    if bone.status != "ok" or len(polygon) < 3:
        return tile
    if len(bone.axis_px) >= 2:
        axis = np.asarray(bone.axis_px[1], float) - np.asarray(bone.axis_px[0], float)
    else:  # the ROI's long side
        centred = polygon - polygon.mean(axis=0)
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    axis = axis / max(np.linalg.norm(axis), 1e-9)
    normal = np.array([-axis[1], axis[0]])
    centre = polygon.mean(axis=0)
    along = (polygon - centre) @ axis
    across = (polygon - centre) @ normal
    half_len = float(np.abs(along).max()) * 1.25  # room below the ROI for the scale bar
    half_wid = float(np.abs(across).max()) * 1.6
    reach = math.hypot(half_len, half_wid) + 2
    rows, cols = image_bone_bright.shape
    c0, c1 = max(0, int(centre[0] - reach)), min(cols, int(centre[0] + reach) + 1)
    r0, r1 = max(0, int(centre[1] - reach)), min(rows, int(centre[1] + reach) + 1)
    crop = image_bone_bright[r0:r1, c0:c1]
    if crop.size == 0:
        return tile
    low, high = np.percentile(crop, [1, 99])
    grey = (np.clip((crop - low) / max(high - low, 1e-9), 0, 1) * 255).astype(np.uint8)
    k = upsample
    view = Image.fromarray(grey, mode="L").resize((grey.shape[1] * k, grey.shape[0] * k), Image.LANCZOS)
    view = view.convert("RGB")
    # Rotate counter-clockwise so the axis (base -> head) points up: its angle, y up, is
    # atan2(-dy, dx) and must become 90 degrees. Lines are drawn afterwards, so they stay crisp.
    angle = 90.0 - math.degrees(math.atan2(-axis[1], axis[0]))
    a = math.radians(angle)
    size = np.array(view.size, dtype=float)
    rotated = view.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=BACKGROUND)

    def rotate(points_view: np.ndarray) -> np.ndarray:
        offset = points_view - size / 2
        x = math.cos(a) * offset[:, 0] + math.sin(a) * offset[:, 1]
        y = -math.sin(a) * offset[:, 0] + math.cos(a) * offset[:, 1]
        return np.stack([x + rotated.width / 2, y + rotated.height / 2], axis=1)

    def to_view(points) -> np.ndarray:  # (column, row) pixel centres -> upsampled crop pixels
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return np.stack([(pts[:, 0] - c0 + 0.5) * k, (pts[:, 1] - r0 + 0.5) * k], axis=1)

    cx, cy = rotate(to_view([centre]))[0]
    box = tuple(round(v) for v in (cx - half_wid * k, cy - half_len * k, cx + half_wid * k, cy + half_len * k))
    zoom = _fit(rotated.crop(box), tile_w, tile_h)
    scale = zoom.width / (box[2] - box[0])
    left, top = (tile_w - zoom.width) // 2, (tile_h - zoom.height) // 2
    tile.paste(zoom, (left, top))

    def to_tile(points) -> list[tuple[float, float]]:
        pts = rotate(to_view(points))
        return [((x - box[0]) * scale + left, (y - box[1]) * scale + top) for x, y in pts]

    draw = ImageDraw.Draw(tile)
    # The overlay's edge colours, so both pictures read the same.
    outer, inner = OUTER_EDGE_COLOUR, INNER_EDGE_COLOUR
    for key, edge in bone.edges_px.items():
        if len(edge) > 1:
            draw.line(to_tile(edge), fill=outer if key.startswith("outer") else inner, width=2)
    ring = to_tile(polygon)
    draw.line(ring + ring[:1], fill=ACCENT, width=2)
    if pixel_spacing_mm:
        bar_px = 5.0 / pixel_spacing_mm * k * scale
        bx, by = left + zoom.width - 8, top + zoom.height - 5
        draw.line((bx - bar_px, by, bx, by), fill=TEXT, width=4)
        draw.text((bx - bar_px / 2, by - 4), "5 mm", font=_font(18), fill=TEXT, anchor="mb",
                  stroke_width=2, stroke_fill=(0, 0, 0))
    return tile


def _fit(image: Image.Image, box_w: int, box_h: int) -> Image.Image:
    scale = min(box_w / image.width, box_h / image.height)
    if abs(scale - 1) < 1e-3:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)


# --- text helpers ----------------------------------------------------------------------------
def _fmt(value: float | None, decimals: int, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "\u2013"
    if round(value, decimals) == 0:
        value = 0.0  # no "-0.0"
    text = f"{value:+.{decimals}f}" if signed and value != 0 else f"{value:.{decimals}f}"
    return text.replace("-", MINUS)


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
                _fmt(bone.cortical_thickness_mm, 2),
                _fmt(bone.outer_width_mm, 2),
                _fmt(bone.mci, 3),
                _fmt(bone.vpa_mm, 2),
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


def summary_lines(result: AnalysisResult) -> list[str]:
    """The combined result as plain lines (the same words the picture draws)."""
    lines = [f"DXR-BMD {_fmt(result.dxr_bmd_g_cm2, 3)} g/cm\u00b2"]
    if result.t_score is not None or result.z_score is not None:
        lines.append(f"T-score {_fmt(result.t_score, 1, signed=True)}   Z-score {_fmt(result.z_score, 1, signed=True)}")
    if _scores_note(result):
        lines.append(_scores_note(result))
    if result.who_category:
        lines.append(f"WHO category (from the DXR T-score): {result.who_category.capitalize()}")
    lines.append(f"BHI {_fmt(result.bhi, 2)}   porosity index {_fmt(result.porosity, 4)}   "
                 f"mean MCI {_fmt(result.mci, 3)}")
    if result.reduced_service:
        lines.append(f"Reduced service: {result.bones_measured} of {len(BONE_NAMES)} metacarpals measured")
    return lines


# --- the chart -------------------------------------------------------------------------------
def _draw_chart(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    result: AnalysisResult,
    bands: Sequence[ReferenceBand],
    omitted_reason: str | None,
) -> None:
    """DXR-BMD (g/cm2) against age (years): reference mean with +/-1 and +/-2.5 SD, patient point."""
    left, top, right, bottom = box
    label_font, tick_font = _font(22), _font(19)
    draw.text((left, top), "DXR-BMD (g/cm\u00b2) against age (years)", font=_font(24, bold=True), fill=TEXT)
    plot = (left + 60, top + 44, right - 12, bottom - 34)
    px0, py0, px1, py1 = plot
    age_lo, age_hi = 20.0, 90.0
    values = [b.mean_g_cm2 + k * b.sd_g_cm2 for b in bands for k in (-2.5, 2.5)]
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
        for k, colour in ((2.5, BAND_25SD), (1.0, BAND_1SD)):
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
    if drawn:
        which = "age-matched" if matched else "young-adult"
        for colour, text in ((BAND_1SD, f"{which} mean \u00b11 SD"), (BAND_25SD, "\u00b12.5 SD")):
            draw.rectangle((lx, ly + 3, lx + 22, ly + 19), fill=colour, outline=(150, 230, 160))
            draw.text((lx + 30, ly), text, font=tick_font, fill=TEXT)
            lx += 40 + draw.textlength(text, font=tick_font) + 12
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
    if not bands:
        reason = omitted_reason or "no reference population configured"
        lines = _wrap(draw, f"No reference curve: {reason}", label_font, px1 - px0 - 40)
        for k, line in enumerate(lines):
            draw.text(((px0 + px1) / 2, (py0 + py1) / 2 + 28 * (k - len(lines) / 2)), line,
                      font=label_font, fill=TEXT, anchor="mt")


# --- the page --------------------------------------------------------------------------------
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
    """
    width, height = PAGE_SIZE_PX
    page = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(page)
    margin = 24

    # header
    draw.text((margin, 18), f"DXR-BMD \u2014 {hand_label}", font=_font(40, bold=True), fill=TEXT)
    who = [x for x in (patient.name, patient.patient_id and f"ID {patient.patient_id}",
                       " ".join(x for x in (patient.sex, patient.age) if x),
                       patient.study_date and f"study {patient.study_date}") if x]
    draw.text((width - margin, 30), "   ".join(who), font=_font(26), fill=TEXT, anchor="ra")
    draw.line((margin, 80, width - margin, 80), fill=GRID, width=2)

    # the radiograph (left)
    footer_top = height - 70
    hand_box = HAND_BOX_PX
    panel = _fit(hand_panel(image_bone_bright, result, max_side_px=1100),
                 hand_box[2] - hand_box[0], hand_box[3] - hand_box[1])
    page.paste(panel, (hand_box[0] + (hand_box[2] - hand_box[0] - panel.width) // 2, hand_box[1]))

    # magnified measurement regions (middle): what the edges were found on, shaft vertical
    zx0, zy0, zx1, zy1 = ZOOM_BOX_PX
    label_h = 34
    tile_h = (zy1 - zy0) // len(BONE_NAMES) - label_h
    for k, name in enumerate(BONE_NAMES):
        top = zy0 + k * (tile_h + label_h)
        bone = result.bones.get(name)
        measured = bone is not None and bone.status == "ok"
        draw.text((zx0, top), f"MC {name}" + ("" if measured else " \u2014 not measured"), font=_font(24, bold=True),
                  fill=TEXT if measured else WHO_COLOURS["osteopenia"])
        if measured:
            page.paste(roi_tile(image_bone_bright, bone, pixel_spacing_mm=result.pixel_spacing_mm,
                                tile_px=(zx1 - zx0, tile_h - 6)), (zx0, top + label_h))

    # results (right)
    x0, x1 = zx1 + 28, width - margin
    y = 100
    draw.text((x0, y), "Metacarpals (mid-shaft ROIs)", font=_font(26, bold=True), fill=TEXT)
    y += 42
    columns = [("", 0), ("T mm", 125), ("W mm", 245), ("MCI", 365), ("VPA mm", 485), ("profiles", 625)]
    head_font, cell_font = _font(22, bold=True), _font(26)
    for title, dx in columns:
        draw.text((x0 + dx, y), title, font=head_font, fill=MUTED)
    y += 34
    draw.line((x0, y, x1, y), fill=GRID, width=1)
    y += 8
    for row in table_rows(result):
        if row[2] == "" and row[1]:
            draw.text((x0, y), row[0], font=_font(26, bold=True), fill=TEXT)
            for k, line in enumerate(_wrap(draw, row[1], _font(22), x1 - x0 - 125)[:2]):
                draw.text((x0 + 125, y + 2 + 28 * k), line, font=_font(22), fill=WHO_COLOURS["osteopenia"])
            y += 62
            continue
        for (title, dx), cell in zip(columns, row):
            draw.text((x0 + dx, y), cell, font=_font(26, bold=not title) if not title else cell_font, fill=TEXT)
        y += 40
    draw.line((x0, y, x1, y), fill=GRID, width=1)
    y += 16

    # combined result
    draw.text((x0, y), f"DXR-BMD  {_fmt(result.dxr_bmd_g_cm2, 3)} g/cm\u00b2", font=_font(40, bold=True), fill=TEXT)
    if result.who_category:
        colour = WHO_COLOURS.get(result.who_category.lower(), TEXT)
        draw.text((x1, y + 6), result.who_category.capitalize(), font=_font(34, bold=True), fill=colour, anchor="ra")
    y += 56
    if result.t_score is not None or result.z_score is not None:
        draw.text((x0, y), f"T-score  {_fmt(result.t_score, 1, signed=True)}      "
                           f"Z-score  {_fmt(result.z_score, 1, signed=True)}", font=_font(32, bold=True), fill=TEXT)
        y += 46
    note = _scores_note(result)
    if note:
        for line in _wrap(draw, note, _font(22), x1 - x0)[:3]:
            draw.text((x0, y), line, font=_font(22), fill=WHO_COLOURS["osteopenia"])
            y += 29
    if result.reference_name:
        for line in _wrap(draw, f"Reference: {result.reference_name}", _font(20), x1 - x0)[:2]:
            draw.text((x0, y), line, font=_font(20), fill=MUTED)
            y += 26
    draw.text((x0, y + 4), f"BHI {_fmt(result.bhi, 2)}     porosity index {_fmt(result.porosity, 4)}     "
                           f"mean MCI {_fmt(result.mci, 3)}", font=_font(24), fill=TEXT)
    y += 40
    if result.reduced_service:
        draw.text((x0, y), f"Reduced service: {result.bones_measured} of {len(BONE_NAMES)} metacarpals measured",
                  font=_font(24, bold=True), fill=WHO_COLOURS["osteopenia"])
        y += 36

    # provenance and unused images (bottom of the right column), chart in between
    notes = [
        (f"Measured on: {measured_label}   \u00b7   " if measured_label else "")
        + f"analysis version {result.analysis_version}",
        f"Pixel spacing {_fmt(result.pixel_spacing_mm, 3)} mm: "
        f"{SPACING_SOURCE_WORDS.get(result.pixel_spacing_source or '', result.pixel_spacing_source or 'source unknown')}",
    ]
    notes = [n for n in notes if n]
    notes += [f"Not used: {item.label} \u2014 {item.reason}" for item in unused]
    note_font = _font(20)
    note_lines = [line for note in notes for line in _wrap(draw, note, note_font, x1 - x0)][:6]
    notes_top = footer_top - 10 - 26 * len(note_lines)
    for k, line in enumerate(note_lines):
        draw.text((x0, notes_top + 26 * k), line, font=note_font, fill=MUTED)
    chart_box = (x0, y + 10, x1, notes_top - 14)
    if chart_box[3] - chart_box[1] > 200:
        _draw_chart(draw, chart_box, result, reference_bands, reference_note or result.scores_omitted_reason)

    # footer: the statement
    draw.rectangle((margin, footer_top, width - margin, height - 14), outline=ACCENT, width=3)
    draw.text((width / 2, (footer_top + height - 14) / 2), DISCLAIMER, font=_font(28, bold=True),
              fill=ACCENT, anchor="mm")
    return page
