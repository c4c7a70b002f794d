"""What the hand finder answers: HandLocation, MetacarpalAxis, and the refusal helper.

Points are ``(row, col)`` pixels of the analysed (full-resolution) image; lengths in mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.result import REASON_MESSAGES

METACARPAL_NAMES: tuple[str, ...] = ("I", "II", "III", "IV", "V")
"""Metacarpals I-V, numbered from the thumb."""


@dataclass
class MetacarpalAxis:
    """The shaft axis of one metacarpal, in pixels of the analysed image ``(row, col)``."""

    name: str
    base_rc: tuple[float, float]
    """Proximal end (carpometacarpal joint), ``(row, col)`` pixels."""
    head_rc: tuple[float, float]
    """Distal end (metacarpophalangeal joint), ``(row, col)`` pixels."""
    length_mm: float
    """L: base-to-head distance (mm)."""
    width_mm: float | None = None
    """Rough outer width of the shaft at mid-length from the location step (mm); measure.py
    measures it properly."""
    confidence: float = 1.0
    """0..1: how clearly the shaft ridge was traced (1 = clean, straight, well separated)."""

    @property
    def mid_rc(self) -> tuple[float, float]:
        return (0.5 * (self.base_rc[0] + self.head_rc[0]), 0.5 * (self.base_rc[1] + self.head_rc[1]))

    def axis_px(self) -> list[tuple[float, float]]:
        """Base and head as ``(column, row)`` points, for :class:`analysis.result.AnalysisResult`."""
        return [(self.base_rc[1], self.base_rc[0]), (self.head_rc[1], self.head_rc[0])]


@dataclass
class HandLocation:
    """Where the hand and its metacarpals are, or why DXR cannot measure this image."""

    view: str | None = None
    """``PA``, ``lateral``, ``oblique`` or None when not determined (e.g. not a hand)."""
    refusal: tuple[str, str] | None = None
    """``(reason code, message)`` when the whole image must be refused."""
    metacarpals: dict[str, MetacarpalAxis] = field(default_factory=dict)
    bone_refusals: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Per-bone ``(reason, message)`` for II-IV when one bone cannot be measured."""
    outline_rc: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    """Hand (body part) outline, ``(N, 2)`` ``(row, col)`` pixels of the analysed image."""
    fingers_direction_rc: tuple[float, float] | None = None
    """Unit vector from wrist to fingers ``(d_row, d_col)``."""
    confidence: float = 0.0
    """0..1: location confidence (mean of the II-IV trace confidences)."""
    details: dict = field(default_factory=dict)
    """Diagnostic figures (unitless ratios, counts) behind the view decision."""

    @property
    def maturity(self) -> str | None:
        """``adult``, ``immature`` or None when the skeleton was not judged (no PA hand found)."""
        if self.refusal is not None and self.refusal[0] == "immature_skeleton":
            return "immature"
        return self.details.get("maturity")

    def summary(self, pixel_spacing_mm: float | None = None) -> dict:
        """What the finder found, as the JSON object of ``dxr-node locate`` (points ``[col, row]``).

        ``anatomy_pixel_spacing_mm``: for a located hand, the pixel size (mm) at which its
        metacarpals II-IV would be a typical adult's
        (:func:`analysis.calibration.anatomy_spacing_factor`); a hint for films whose pixel size is
        unknown, not a calibration (adults differ by about 10 %). None otherwise.
        """
        from analysis.calibration import anatomy_spacing_factor

        located = self.refusal is None and self.view == "PA" and all(n in self.metacarpals for n in ("II", "III", "IV"))
        reason, message = self.refusal if self.refusal is not None else (None, None)
        factor = anatomy_spacing_factor({n: self.metacarpals[n].length_mm for n in ("II", "III", "IV")}) if located else None
        anatomy_mm = round(pixel_spacing_mm * factor, 3) if factor is not None and pixel_spacing_mm else None
        return {
            "status": "located" if located else "refused",
            "reason": reason,
            "message": message,
            "view": self.view,
            "maturity": self.maturity,
            "metacarpals": {
                n: {"base_px": [round(a.base_rc[1], 1), round(a.base_rc[0], 1)],
                    "head_px": [round(a.head_rc[1], 1), round(a.head_rc[0], 1)],
                    "length_mm": round(a.length_mm, 1)}
                for n, a in self.metacarpals.items()
            },
            "pixel_spacing_mm": pixel_spacing_mm,
            "anatomy_pixel_spacing_mm": anatomy_mm,
        }


def _refuse(reason: str, message: str | None = None, **kw) -> HandLocation:
    """A HandLocation refusing the image: ``reason`` code, ``message`` (default: the code's standard
    message from :data:`analysis.result.REASON_MESSAGES`); ``kw`` sets other fields (view, outline)."""
    return HandLocation(refusal=(reason, message or REASON_MESSAGES.get(reason, reason)), **kw)
