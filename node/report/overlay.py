"""Review overlay: what the analysis found, drawn on a downsized copy of the radiograph.

A reviewer must see at a glance whether the right bones were measured: the hand outline, the
axes of metacarpals I-V with their names, the three measurement regions (ROIs) with the
detected cortical edges, and for a refused image the reason in large text.

Colours (RGB) are module constants so tests and documentation can name them.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from analysis.result import AnalysisResult

OUTLINE_COLOUR = (0, 200, 255)
"""Hand outline: cyan."""
AXIS_COLOUR = (255, 140, 0)
"""Metacarpal axes I-V and their labels: orange."""
ROI_COLOUR = (255, 214, 10)
"""Measurement region outline (II-IV): yellow."""
OUTER_EDGE_COLOUR = (255, 40, 40)
"""Periosteal (outer) edges: red."""
INNER_EDGE_COLOUR = (60, 255, 60)
"""Endosteal (inner) edges: green."""
REFUSED_COLOUR = (255, 60, 60)
"""Text of a refusal (whole image or one bone): red."""
TEXT_COLOUR = (255, 255, 255)


@lru_cache(maxsize=64)
def load_font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The bundled DejaVu Sans (bold) at ``size`` pixels; shared with ``node.report.picture``."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        with resources.as_file(resources.files("node.fonts") / name) as path:
            return ImageFont.truetype(str(path), size)
    except (OSError, FileNotFoundError, ModuleNotFoundError):  # pragma: no cover - font shipped
        return ImageFont.load_default()


def _to_grey8(image: np.ndarray) -> np.ndarray:
    """Window the image to 8 bits between its 0.5th and 99.5th percentiles."""
    a = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(a)
    every = bool(finite.all())  # the usual case: no masked copies of a whole radiograph (~60 ms)
    if not every and not finite.any():
        return np.zeros(a.shape, np.uint8)
    lo, hi = np.percentile(a if every else a[finite], [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    # The same operations as (clip((a - lo) / (hi - lo), 0, 1) * 255 + 0.5), in one buffer.
    scaled = np.subtract(a if every else np.where(finite, a, lo), lo)
    scaled /= hi - lo
    np.clip(scaled, 0.0, 1.0, out=scaled)
    scaled *= 255.0
    scaled += 0.5
    return scaled.astype(np.uint8)


def _scaled(points: Iterable[Sequence[float]], scale: float) -> list[tuple[float, float]]:
    """``(column, row)`` image pixels -> overlay pixels (pixel centres kept aligned)."""
    return [((float(c) + 0.5) * scale - 0.5, (float(r) + 0.5) * scale - 0.5) for c, r in points]


def wrap_text(draw: ImageDraw.ImageDraw, text: str, font, width_px: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width_px`` (a longer word keeps its own line)."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width_px or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def draw_overlay(image_bone_bright: np.ndarray, result: AnalysisResult, *, max_side_px: int = 1024) -> Image.Image:
    """Draw the analysis result over a downsized copy of the radiograph.

    Parameters
    ----------
    image_bone_bright : ndarray (rows, cols)
        The analysed image, bone bright; the coordinates in ``result`` refer to its pixels.
    result : AnalysisResult
        Geometry in ``(column, row)`` image pixels: ``hand_outline_px``,
        ``metacarpal_axes_px`` (I-V, base to head), and per bone ``roi_polygon_px``,
        ``edges_px``, ``roi_center_px``.
    max_side_px : int
        The longer side of the picture (pixels); the image is never enlarged.

    Returns
    -------
    PIL.Image.Image
        RGB picture, ``round(cols * scale)`` x ``round(rows * scale)`` with
        ``scale = min(1, max_side_px / max(rows, cols))``.
    """
    grey = _to_grey8(image_bone_bright)
    rows, cols = grey.shape
    scale = min(1.0, float(max_side_px) / max(rows, cols))
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    picture = Image.fromarray(grey, mode="L")
    if size != (cols, rows):
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    picture = picture.convert("RGB")
    draw = ImageDraw.Draw(picture)
    side = max(size)
    line_w = max(1, round(side / 400))
    label_font = load_font(max(12, round(side / 45)), bold=True)

    _draw_outline_and_axes(draw, result, scale, line_w, label_font)
    _draw_bones(draw, result, scale, line_w, side)
    if result.status != "ok":
        _draw_refusal(draw, result, size, side)
    else:
        _draw_caption(draw, result, size, side)
    return picture


def _draw_outline_and_axes(draw: ImageDraw.ImageDraw, result: AnalysisResult, scale: float, line_w: int,
                           label_font) -> None:
    """The hand outline and the metacarpal axes I-V, each named beyond its head."""
    if len(result.hand_outline_px) >= 3:
        pts = _scaled(result.hand_outline_px, scale)
        draw.line(pts + pts[:1], fill=OUTLINE_COLOUR, width=line_w)

    for name, axis in sorted(result.metacarpal_axes_px.items()):
        if len(axis) < 2:
            continue
        (x0, y0), (x1, y1) = _scaled(axis[:2], scale)
        draw.line([(x0, y0), (x1, y1)], fill=AXIS_COLOUR, width=line_w)
        r = 1.5 * line_w + 1
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], outline=AXIS_COLOUR, width=line_w)
        # The label sits just beyond the head, along the axis.
        dx, dy = x1 - x0, y1 - y0
        norm = max((dx * dx + dy * dy) ** 0.5, 1e-6)
        off = 0.9 * label_font.size
        draw.text((x1 + dx / norm * off, y1 + dy / norm * off), name, fill=AXIS_COLOUR, font=label_font,
                  anchor="mm", stroke_width=2, stroke_fill=(0, 0, 0))


def _draw_bones(draw: ImageDraw.ImageDraw, result: AnalysisResult, scale: float, line_w: int, side: int) -> None:
    """Each bone's ROI and detected edges; a bone not measured gets its reason beside it."""
    for name, bone in result.bones.items():
        if len(bone.roi_polygon_px) >= 3:
            poly = _scaled(bone.roi_polygon_px, scale)
            colour = ROI_COLOUR if bone.status == "ok" else REFUSED_COLOUR
            draw.line(poly + poly[:1], fill=colour, width=line_w)
        for key, edge in bone.edges_px.items():
            if len(edge) < 2:
                continue
            colour = OUTER_EDGE_COLOUR if key.startswith("outer") else INNER_EDGE_COLOUR
            draw.line(_scaled(edge, scale), fill=colour, width=max(1, line_w - 1) if scale < 1 else 1)
        if bone.status != "ok":
            # Name the reason beside the bone: at its ROI, else at the middle of its axis.
            axis = bone.axis_px if len(bone.axis_px) >= 2 else result.metacarpal_axes_px.get(name, [])
            if bone.roi_center_px is not None:
                centre = bone.roi_center_px
            elif len(axis) >= 2:
                centre = tuple(np.mean(np.asarray(axis[:2], float), axis=0))
            else:
                continue
            (cx, cy), = _scaled([centre], scale)
            small = load_font(max(10, round(side / 75)), bold=True)
            draw.text((cx, cy), f"{name}: {(bone.reason or 'not measured').replace('_', ' ')}",
                      fill=REFUSED_COLOUR, font=small, anchor="mm", stroke_width=2, stroke_fill=(0, 0, 0))


def _draw_refusal(draw: ImageDraw.ImageDraw, result: AnalysisResult, size: tuple[int, int], side: int) -> None:
    """The refusal reason in large type and the message under it, on a black band at the top."""
    title = (result.reason or result.status).replace("_", " ").upper()
    big_size = max(18, round(side / 14))
    big = load_font(big_size, bold=True)
    while big_size > 12 and draw.textlength(title, font=big) > 0.94 * size[0]:
        big_size -= 2
        big = load_font(big_size, bold=True)
    small = load_font(max(12, round(side / 36)))
    lines = wrap_text(draw, result.message or "", small, int(0.9 * size[0]))
    height = big.size * 1.3 + len(lines) * small.size * 1.25 + 0.04 * side
    draw.rectangle([0, 0, size[0], height], fill=(0, 0, 0))
    y = 0.02 * side
    draw.text((size[0] / 2, y), title, fill=REFUSED_COLOUR, font=big, anchor="ma")
    y += big.size * 1.3
    for line in lines:
        draw.text((size[0] / 2, y), line, fill=TEXT_COLOUR, font=small, anchor="ma")
        y += small.size * 1.25


def _draw_caption(draw: ImageDraw.ImageDraw, result: AnalysisResult, size: tuple[int, int], side: int) -> None:
    """The measured result in a few words at the top left."""
    parts = [f"{result.bones_measured} bones"]
    if result.mci is not None:
        parts.append(f"MCI {result.mci:.3f}")
    if result.dxr_bmd_g_cm2 is not None:
        parts.append(f"DXR-BMD {result.dxr_bmd_g_cm2:.3f} g/cm²")
    if result.reduced_service:
        parts.append("reduced service")
    # As many parts a line as fit the width (a portrait crop is narrow); the font shrinks
    # only if one part alone is still wider than the picture.
    margin = 0.01 * side
    width = size[0] - 2 * margin
    caption_size = max(12, round(side / 40))
    font = load_font(caption_size, bold=True)
    lines: list[str] = []
    for part in parts:
        if lines and draw.textlength(f"{lines[-1]}  {part}", font=font) <= width:
            lines[-1] = f"{lines[-1]}  {part}"
        else:
            lines.append(part)
    while caption_size > 8 and max(draw.textlength(line, font=font) for line in lines) > width:
        caption_size -= 1
        font = load_font(caption_size, bold=True)
    y = margin
    for line in lines:
        draw.text((margin, y), line, fill=TEXT_COLOUR, font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        y += 1.25 * caption_size
