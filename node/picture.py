"""The Secondary Capture result picture: hand with ROIs, results table, BMD-vs-age chart.

Pure drawing with Pillow and the bundled DejaVu fonts; no DICOM is written here
(``node/outputs.py`` wraps the picture in an SC instance).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from analysis.result import AnalysisResult

DISCLAIMER = "Computed estimate from a radiograph (DXR) \u2014 not a DXA measurement"


@dataclass(frozen=True)
class UnusedImage:
    """An image of the study the report did not measure on, and why (one line)."""

    label: str
    reason: str


def _font(size_px: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    with resources.as_file(resources.files("node.fonts") / name) as path:
        return ImageFont.truetype(str(path), size_px)


def bone_bright_image(dataset) -> np.ndarray:
    """The dataset's pixels as float64, bone bright (MONOCHROME1 inverted).

    Uses ``analysis.calibration.image_from_dataset`` when available so the picture shows
    exactly what was measured.
    """
    try:
        from analysis.calibration import image_from_dataset
    except ImportError:
        image_from_dataset = None
    if image_from_dataset is not None:
        try:
            return np.asarray(image_from_dataset(dataset).image, dtype=np.float64)
        except Exception:  # noqa: BLE001 - fall back to the plain conversion below
            pass
    pixels = np.asarray(dataset.pixel_array, dtype=np.float64)
    if pixels.ndim == 3:  # colour or multi-frame: first plane / luminance
        pixels = pixels.mean(axis=-1) if pixels.shape[-1] == 3 else pixels[0]
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = pixels.max() - pixels
    return pixels


def _grey_to_rgb(image_bone_bright: np.ndarray, max_side_px: int) -> Image.Image:
    low, high = np.percentile(image_bone_bright, [0.5, 99.5])
    scaled = np.clip((image_bone_bright - low) / max(high - low, 1e-9), 0.0, 1.0)
    picture = Image.fromarray((scaled * 255).astype(np.uint8), mode="L").convert("RGB")
    scale = max_side_px / max(picture.size)
    if scale < 1:
        picture = picture.resize(
            (max(1, round(picture.width * scale)), max(1, round(picture.height * scale))), Image.LANCZOS
        )
    return picture


def hand_panel(image_bone_bright: np.ndarray, result: AnalysisResult, max_side_px: int = 1024) -> Image.Image:
    """The hand with ROIs and edges (``node.overlay.draw_overlay`` when present)."""
    try:
        from node.overlay import draw_overlay
    except ImportError:
        draw_overlay = None
    if draw_overlay is not None:
        return draw_overlay(image_bone_bright, result, max_side_px=max_side_px).convert("RGB")
    return _grey_to_rgb(image_bone_bright, max_side_px)


def compose_picture(
    image_bone_bright: np.ndarray,
    result: AnalysisResult,
    *,
    hand_label: str,
    unused: list[UnusedImage] | tuple[UnusedImage, ...] = (),
) -> Image.Image:
    """The full result picture, RGB, at least 1024 px on its short side."""
    hand = hand_panel(image_bone_bright, result, max_side_px=1024)
    height = max(1024, hand.height)
    width = hand.width + 900
    picture = Image.new("RGB", (width, height), (0, 0, 0))
    picture.paste(hand, (0, (height - hand.height) // 2))
    draw = ImageDraw.Draw(picture)
    x, y = hand.width + 30, 30
    draw.text((x, y), f"DXR-BMD result, {hand_label}", font=_font(34, bold=True), fill=(255, 255, 255))
    y += 60
    for line in _result_lines(result):
        draw.text((x, y), line, font=_font(24), fill=(255, 255, 255))
        y += 34
    for item in unused:
        draw.text((x, y), f"Not used: {item.label}: {item.reason}", font=_font(20), fill=(200, 200, 200))
        y += 28
    draw.text((x, height - 50), DISCLAIMER, font=_font(22, bold=True), fill=(255, 220, 0))
    return picture


def _result_lines(result: AnalysisResult) -> list[str]:
    lines = []
    for name, bone in result.bones.items():
        if bone.status == "ok":
            lines.append(
                f"MC {name}: T {bone.cortical_thickness_mm:.2f} mm  W {bone.outer_width_mm:.2f} mm  MCI {bone.mci:.3f}"
            )
        else:
            lines.append(f"MC {name}: not measured ({bone.reason})")
    if result.dxr_bmd_g_cm2 is not None:
        lines.append(f"DXR-BMD {result.dxr_bmd_g_cm2:.3f} g/cm\u00b2")
    return lines
