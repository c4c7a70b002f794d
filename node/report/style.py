"""The picture's look, shared by its parts: colours, and numbers written with a true minus sign.
"""

from __future__ import annotations

import math

__all__ = ["ACCENT", "BACKGROUND", "BAND_1SD", "BAND_25SD", "GRID", "MINUS", "MUTED", "TEXT", "WHO_COLOURS", "fmt"]

BACKGROUND = (0, 0, 0)
TEXT = (235, 235, 235)
MUTED = (165, 165, 165)
ACCENT = (255, 214, 10)  # the ROI yellow of the overlay, also used for the patient's point
GRID = (70, 70, 70)
BAND_1SD = (40, 95, 60)
BAND_25SD = (28, 52, 38)
WHO_COLOURS = {"normal": (120, 200, 120), "osteopenia": (255, 190, 60), "osteoporosis": (255, 95, 80)}
MINUS = "\u2212"


def fmt(value: float | None, decimals: int, signed: bool = False) -> str:
    """``value`` with ``decimals`` decimals, a true minus sign, an en dash when missing."""
    if value is None or not math.isfinite(value):
        return "\u2013"
    if round(value, decimals) == 0:
        value = 0.0  # no "-0.0"
    text = f"{value:+.{decimals}f}" if signed and value != 0 else f"{value:.{decimals}f}"
    return text.replace("-", MINUS)
