"""Stage 7: checks on the traced bones: metal over a shaft, and bones cut by the field edge.

Takes the full-resolution image (pixel size in mm), the working copy, the canonical hand and the
shaft lines or the traced axes (image pixels); gives the bones to refuse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from analysis.locate.body import _work_index
from analysis.locate.frame import _along, _CanonicalHand
from analysis.locate.joints import _axis_of
from analysis.locate.location import MetacarpalAxis
from analysis.locate.shafts import NAMES, _Shafts
from analysis.qc import has_foreign_object

if TYPE_CHECKING:
    from analysis.locate.body import _Work

METAL_ALONG_RATIO = 2.5
"""Something this many times brighter than the shaft on a shaft line is metal."""


def _metal_along_shafts(hand: _CanonicalHand, shafts: _Shafts, details: dict) -> set[str]:
    """Bones of II-V with metal over their shaft line on the working copy: along the line from
    0.3 s to 4.0 s proximal to the finger base, a maximum over METAL_ALONG_RATIO times the median.
    Records ``details["metal_suspect"]``."""
    ys = np.arange(0.0, hand.canon.shape[0] - 1.0, 0.5)
    s, fb = hand.s, hand.fb
    metal_suspect = set()
    for k, name in enumerate(NAMES):
        a, b = shafts.lines[k]
        along_y = ys[(ys > fb[k, 0] + 0.3 * s) & (ys < fb[k, 0] + 4.0 * s)]
        if along_y.size < 5:
            continue
        centre = _along(hand.canon, a, b, along_y, 1.0)
        level = float(np.median(centre))
        if level > 0 and float(np.max(centre)) > METAL_ALONG_RATIO * level:
            metal_suspect.add(name)
    details["metal_suspect"] = sorted(metal_suspect)
    return metal_suspect


def _metal_under(image: np.ndarray, pixel_spacing_mm: float, hand: _CanonicalHand, shafts: _Shafts,
                 ends: dict, image_max: float) -> set[str]:
    """Bones of II-IV (``ends``: name -> ``(head_y, base_y)`` canonical) whose ROI on the
    full-resolution image holds a foreign object (:func:`analysis.qc.has_foreign_object`;
    ``image_max`` is the image's maximum, computed once)."""
    out = set()
    for n, (hd, bs) in ends.items():
        ax = _axis_of(hand, shafts, n, hd, bs, pixel_spacing_mm)
        if n != "V" and has_foreign_object(image, ax.base_rc, ax.head_rc, pixel_spacing_mm, image_max):
            out.add(n)
    return out


def _cut_by_field(found: dict[str, MetacarpalAxis], image_shape: tuple[int, int], w: _Work, s: float,
                  pixel_spacing_mm: float) -> list[str]:
    """Bones of II-IV not wholly in the field: an end within 1 mm of the image border, or not
    within s/3 (``s``: finger spacing, working pixels) of the body mask ``w.body``. A head traced
    a little to the side lands in the web between two fingers; a bone cut by the field edge or a
    collimator band ends far from any tissue. ``found`` holds the axes in image pixels."""
    margin_px = 1.0 / pixel_spacing_mm
    rows_img, cols_img = image_shape
    cut = []
    for name in ("II", "III", "IV"):
        for r, c in (found[name].base_rc, found[name].head_rc):
            rw, cw = _work_index(r, w.factor), _work_index(c, w.factor)
            reach = max(1, int(round(s / 3.0)))
            near = w.body[max(0, rw - reach) : rw + reach + 1, max(0, cw - reach) : cw + reach + 1]
            on_hand = 0 <= rw < w.body.shape[0] and 0 <= cw < w.body.shape[1] and bool(near.any())
            if not (margin_px <= r < rows_img - margin_px and margin_px <= c < cols_img - margin_px) or not on_hand:
                cut.append(name)
                break
    return cut
