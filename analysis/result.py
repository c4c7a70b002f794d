"""Result of one radiogrammetry analysis, and its JSON form.

This is the contract between ``analysis/`` and everything else (the CLI's JSON Lines,
the node's job, ``node/outputs`` which turns it into SR and SC). Plain dataclasses,
numbers and geometry only.

Coordinates: every ``*_px`` point is ``(column, row)`` = ``(x, y)`` in pixels of the
analysed image as stored (before any internal rotation), matching the JSON contract.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

ANALYSIS_VERSION = "0.1.0"

Status = Literal["ok", "refused", "error"]
PointPx = tuple[float, float]
"""A point in image pixels, ``(column, row)``."""

BONE_NAMES: tuple[str, ...] = ("II", "III", "IV")
"""The measured metacarpals, numbered from the thumb (I)."""

REASON_MESSAGES: dict[str, str] = {
    "no_pixel_spacing": "The image has no pixel spacing, so distances in mm cannot be measured; "
    "send the original DICOM from the modality or give the pixel size explicitly.",
    "non_square_pixels": "The pixels are not square; DXR needs an image with square pixels.",
    "resolution_too_low": "The pixels are larger than 0.25 mm, too coarse to measure cortical bone; "
    "send the full-resolution image.",
    "not_pa_hand": "The image does not look like a PA hand radiograph.",
    "lateral_view": "This is a lateral view of the hand; DXR needs a PA (dorso-volar) view.",
    "oblique_view": "This is an oblique view of the hand; DXR needs a PA (dorso-volar) view.",
    "immature_skeleton": "Open growth plates were found: DXR-BMD is only defined for adults.",
    "bone_not_found": "Metacarpals II-IV could not all be found fully inside the image.",
    "foreign_object_in_roi": "Metal, a cast or a fracture lies over the measurement region.",
    "low_quality": "Too few profiles gave a consistent measurement on this bone.",
    "unreadable": "The file could not be read as an image.",
    "analysis_error": "The analysis failed unexpectedly; the log has details.",
}
"""Default one-sentence messages for each refusal reason code."""


@dataclass
class BoneResult:
    """Measurement of one metacarpal (II, III or IV).

    Lengths in mm, geometry in image pixels ``(column, row)``.
    """

    name: str
    status: Status = "ok"
    reason: str | None = None
    message: str | None = None
    cortical_thickness_mm: float | None = None
    """T: mean of the radial and ulnar wall thickness (mm)."""
    outer_width_mm: float | None = None
    """W: periosteal (outer) diameter (mm)."""
    length_mm: float | None = None
    """L: bone length, base to head (mm)."""
    mci: float | None = None
    """Metacarpal index 2T/W (unitless)."""
    vpa_mm: float | None = None
    """Volume per area pi*T*(1 - T/W) (mm)."""
    profiles_used: int = 0
    profiles_total: int = 0
    quality: float | None = None
    """0..1 confidence (fraction of profiles kept, scaled by fit residual); see docs."""
    roi_center_px: PointPx | None = None
    roi_polygon_px: list[PointPx] = field(default_factory=list)
    axis_px: list[PointPx] = field(default_factory=list)
    """Shaft axis from base to head, two points."""
    edges_px: dict[str, list[PointPx]] = field(default_factory=dict)
    """Detected edges as polylines: keys ``outer_a``, ``inner_a``, ``inner_b``, ``outer_b``."""

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "cortical_thickness_mm": _num(self.cortical_thickness_mm),
            "outer_width_mm": _num(self.outer_width_mm),
            "length_mm": _num(self.length_mm),
            "mci": _num(self.mci),
            "vpa_mm": _num(self.vpa_mm),
            "profiles_used": self.profiles_used,
            "profiles_total": self.profiles_total,
            "quality": _num(self.quality),
            "roi_center_px": _pt(self.roi_center_px),
            "roi_polygon_px": [_pt(p) for p in self.roi_polygon_px],
        }


@dataclass
class AnalysisResult:
    """Everything one image's analysis produced.

    ``status`` is ``ok`` when at least two of II-IV were measured, ``refused`` with a
    ``reason`` code when DXR cannot measure this image, ``error`` when it could not be read.
    """

    status: Status
    reason: str | None = None
    message: str | None = None
    file: str | None = None
    laterality: str | None = None
    """``L``, ``R`` or None (unknown): from the header only, never guessed from anatomy."""
    view: str | None = None
    """``PA``, ``lateral``, ``oblique`` or None when not determined."""
    pixel_spacing_mm: float | None = None
    pixel_spacing_source: str | None = None
    """``PixelSpacing``, ``ImagerPixelSpacing``, ``ImagerPixelSpacing/magnification`` or ``cli``."""
    image_shape: tuple[int, int] | None = None
    """``(rows, columns)`` of the analysed image."""
    bones: dict[str, BoneResult] = field(default_factory=dict)
    metacarpal_axes_px: dict[str, list[PointPx]] = field(default_factory=dict)
    """Axes of all metacarpals found, keyed ``I``..``V``, base to head (for overlays)."""
    hand_outline_px: list[PointPx] = field(default_factory=list)
    cortical_thickness_mm: float | None = None
    outer_width_mm: float | None = None
    length_mm: float | None = None
    mci: float | None = None
    vpa_mm: float | None = None
    bhi: float | None = None
    porosity: float | None = None
    """The porosity used in DXR-BMD (0: not measured; never reported as a result)."""
    dxr_bmd_g_cm2: float | None = None
    t_score: float | None = None
    z_score: float | None = None
    who_category: str | None = None
    scores_omitted_reason: str | None = None
    reference_name: str | None = None
    """The reference population used for T/Z: the set's name and the rows' mean, SD, n."""
    reference_provisional: bool = False
    """True when the T- or Z-score comes from a provisional (modelled) reference row."""
    reference_mean_g_cm2: float | None = None
    reference_sd_g_cm2: float | None = None
    """Mean and SD of the young-adult reference the T-score uses (g/cm2)."""
    z_reference_mean_g_cm2: float | None = None
    z_reference_sd_g_cm2: float | None = None
    """Mean and SD of the age-matched reference the Z-score uses (g/cm2)."""
    sex: str | None = None
    age_years: float | None = None
    analysis_version: str = ANALYSIS_VERSION

    @property
    def bones_measured(self) -> int:
        return sum(1 for b in self.bones.values() if b.status == "ok")

    @property
    def reduced_service(self) -> bool:
        """True when the result comes from fewer than three bones (CPT modifier 52)."""
        return self.status == "ok" and self.bones_measured < len(BONE_NAMES)

    def to_json(self) -> dict[str, Any]:
        """The research CLI's JSON object (see README, "analyze")."""
        return {
            "file": self.file,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "laterality": self.laterality,
            "view": self.view,
            "pixel_spacing_mm": _num(self.pixel_spacing_mm),
            "pixel_spacing_source": self.pixel_spacing_source,
            "bones": {name: bone.to_json() for name, bone in self.bones.items()},
            "bones_measured": self.bones_measured,
            "reduced_service": self.reduced_service,
            "cortical_thickness_mm": _num(self.cortical_thickness_mm),
            "outer_width_mm": _num(self.outer_width_mm),
            "length_mm": _num(self.length_mm),
            "mci": _num(self.mci),
            "vpa_mm": _num(self.vpa_mm),
            "bhi": _num(self.bhi),
            "dxr_bmd_g_cm2": _num(self.dxr_bmd_g_cm2),
            "t_score": _num(self.t_score),
            "z_score": _num(self.z_score),
            "who_category": self.who_category,
            "scores_omitted_reason": self.scores_omitted_reason,
            "reference": self.reference_name,
            "reference_provisional": self.reference_provisional if self.reference_name else None,
            "sex": self.sex,
            "age_years": _num(self.age_years),
            "analysis_version": self.analysis_version,
        }

    def replace(self, **changes: Any) -> "AnalysisResult":
        return dataclasses.replace(self, **changes)


def refused(reason: str, message: str | None = None, **fields: Any) -> AnalysisResult:
    """A refusal with the default message for ``reason`` unless one is given."""
    return AnalysisResult(
        status="refused", reason=reason, message=message or REASON_MESSAGES.get(reason, reason), **fields
    )


def _num(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def _pt(point: PointPx | None) -> list[float] | None:
    return None if point is None else [round(float(point[0]), 2), round(float(point[1]), 2)]
