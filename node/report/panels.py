"""The picture's radiograph panels: the hand cropped to it with its overlay, and each ROI magnified.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from analysis.calibration import image_from_dataset
from analysis.result import AnalysisResult
from node.report.overlay import INNER_EDGE_COLOUR, OUTER_EDGE_COLOUR, draw_overlay, load_font
from node.report.style import ACCENT, BACKGROUND, TEXT

__all__ = ["bone_bright_image", "fit", "hand_panel", "roi_tile"]

log = logging.getLogger("dxr.report")


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
        draw.text((top_x, top_y - 6), name, font=load_font(26, bold=True), fill=ACCENT, anchor="mb",
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
    axis = _shaft_direction(bone, polygon)
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
    zoom = fit(rotated.crop(box), tile_w, tile_h)
    scale = zoom.width / (box[2] - box[0])
    left, top = (tile_w - zoom.width) // 2, (tile_h - zoom.height) // 2
    tile.paste(zoom, (left, top))

    def to_tile(points) -> list[tuple[float, float]]:
        pts = rotate(to_view(points))
        return [((x - box[0]) * scale + left, (y - box[1]) * scale + top) for x, y in pts]

    _draw_roi_marks(tile, to_tile, bone, polygon, bar_px=5.0 / pixel_spacing_mm * k * scale if pixel_spacing_mm else None,
                    bar_anchor=(left + zoom.width - 8, top + zoom.height - 5))
    return tile


def _shaft_direction(bone, polygon: np.ndarray) -> np.ndarray:
    """Unit vector along the shaft (base to head): the bone's axis, else the ROI's long side."""
    if len(bone.axis_px) >= 2:
        axis = np.asarray(bone.axis_px[1], float) - np.asarray(bone.axis_px[0], float)
    else:  # the ROI's long side
        centred = polygon - polygon.mean(axis=0)
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    return axis / max(np.linalg.norm(axis), 1e-9)


def _draw_roi_marks(tile: Image.Image, to_tile: Callable, bone, polygon: np.ndarray, *, bar_px: float | None,
                    bar_anchor: tuple[float, float]) -> None:
    """Edges, ROI outline and the 5 mm bar (``bar_px`` long, None: spacing unknown) on a magnified tile."""
    draw = ImageDraw.Draw(tile)
    # The overlay's edge colours, so both pictures read the same.
    outer, inner = OUTER_EDGE_COLOUR, INNER_EDGE_COLOUR
    for key, edge in bone.edges_px.items():
        if len(edge) > 1:
            draw.line(to_tile(edge), fill=outer if key.startswith("outer") else inner, width=2)
    ring = to_tile(polygon)
    draw.line(ring + ring[:1], fill=ACCENT, width=2)
    if bar_px:
        bx, by = bar_anchor
        draw.line((bx - bar_px, by, bx, by), fill=TEXT, width=4)
        draw.text((bx - bar_px / 2, by - 4), "5 mm", font=load_font(18), fill=TEXT, anchor="mb",
                  stroke_width=2, stroke_fill=(0, 0, 0))


def fit(image: Image.Image, box_w: int, box_h: int) -> Image.Image:
    """``image`` scaled to fit in ``box_w`` x ``box_h`` (aspect kept)."""
    scale = min(box_w / image.width, box_h / image.height)
    if abs(scale - 1) < 1e-3:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
