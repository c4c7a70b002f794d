"""Quality checks on a located metacarpal: is there anything but bone over its measurement region?

Metal (a plate, a ring, a bracelet), a cast edge or a marker over the mid-shaft makes the
cortical edges meaningless there. The check compares the measurement region with the same
bone's shaft just outside it, so it needs no absolute calibration and works on 8-bit exports.

Coordinates are ``(row, col)`` pixels of the analysed image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

ROI_FRACTION = 0.4
"""Length of the region checked, as a fraction of the bone length L, centred at mid-shaft (it
covers the measurement ROI with margin)."""
HALF_WIDTH_FRACTION = 0.12
"""Half-width of the region checked across the shaft, as a fraction of L: the whole shaft
(W is about L/8) plus margin, short of the neighbouring metacarpals."""
SHAFT_HALF_WIDTH_FRACTION = 0.07
"""Half-width of the shaft itself as a fraction of L (W is about L/8, plus an axis error of a mm or
so): only foreign material that reaches this close to the axis lies over the bone. A plate over
the neighbouring metacarpal that enters the wider checked region from the side does not."""
FOREIGN_CONTRAST = 2.0
"""A pixel is foreign when its contrast over soft tissue exceeds this multiple of the bone's own
(the brightest shaft outside the region). Cortical bone varies by well under 1.3x along a shaft
on the real hands; metal is several times denser."""
FOREIGN_FRACTION_MAX = 0.1
"""More than this fraction of foreign pixels in the region refuses the bone."""


def _grid(base_rc, head_rc, t: np.ndarray, s_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p0 = np.asarray(base_rc, float)
    d = np.asarray(head_rc, float) - p0
    length = float(np.hypot(*d))
    u = d / max(length, 1e-9)
    n = np.array([-u[1], u[0]])
    tt, ss = np.meshgrid(t * length, s_px, indexing="ij")
    return p0[0] + tt * u[0] + ss * n[0], p0[1] + tt * u[1] + ss * n[1]


def foreign_object_fraction(image: np.ndarray, base_rc, head_rc, pixel_spacing_mm: float,
                            image_max: float | None = None) -> float:
    """Fraction of the mid-shaft region (ROI_FRACTION of L, +-HALF_WIDTH_FRACTION of L) covered by
    foreign material that reaches the shaft (within SHAFT_HALF_WIDTH_FRACTION of L of the axis).

    Parameters
    ----------
    image : ndarray
        The radiograph, bone bright.
    base_rc, head_rc : (row, col)
        The shaft axis from :func:`analysis.locate.locate_hand`.
    pixel_spacing_mm : float
        Pixel size (mm).
    image_max : float, optional
        ``image.max()`` when the caller already has it (a full-image pass costs ~4 ms at
        2500x3000, and the hand finder checks several bones of one image).

    Returns
    -------
    float
        0..1; compare with :data:`FOREIGN_FRACTION_MAX`.
    """
    image = np.asarray(image, dtype=np.float64)
    length_px = float(np.hypot(*(np.asarray(head_rc, float) - np.asarray(base_rc, float))))
    if length_px < 4:
        return 0.0
    half = HALF_WIDTH_FRACTION * length_px
    step = max(1.0, 0.2 / pixel_spacing_mm)  # 0.2 mm sampling is plenty for a blob of metal
    n_t = max(8, int(ROI_FRACTION * length_px / step))
    n_s = max(5, int(2 * half / step))
    t_roi = np.linspace(0.5 - ROI_FRACTION / 2, 0.5 + ROI_FRACTION / 2, n_t)
    rr, cc = _grid(base_rc, head_rc, t_roi, np.linspace(-half, half, n_s))
    roi = ndi.map_coordinates(image, [rr, cc], order=1, mode="nearest")
    # The bone's own brightness: the shaft centre-line just outside the region, both sides.
    t_ref = np.concatenate([np.linspace(0.15, 0.5 - ROI_FRACTION / 2 - 0.02, 12),
                            np.linspace(0.5 + ROI_FRACTION / 2 + 0.02, 0.85, 12)])
    rr, cc = _grid(base_rc, head_rc, t_ref, np.linspace(-1.5, 1.5, 3) / pixel_spacing_mm)
    ref = ndi.map_coordinates(image, [rr, cc], order=1, mode="nearest")
    soft = float(np.percentile(roi, 5))
    bone = float(np.percentile(ref, 90))
    contrast = bone - soft
    if contrast <= 0:
        return 0.0
    foreign = (roi - soft) > FOREIGN_CONTRAST * contrast
    # An 8-bit export clips metal at its maximum: clipped pixels in the region are foreign when
    # the bone itself is not clipped.
    top = float(np.max(image)) if image_max is None else float(image_max)
    if bone < 0.97 * top:
        foreign |= roi >= 0.995 * top
    if foreign.any():
        # Count only objects over the shaft: a component must reach the shaft's own width.
        labels, _ = ndi.label(foreign)
        s_px = np.linspace(-half, half, n_s)
        over_shaft = np.abs(s_px) <= SHAFT_HALF_WIDTH_FRACTION * length_px
        touching = np.unique(labels[:, over_shaft])
        foreign = np.isin(labels, touching[touching > 0])
    return float(np.mean(foreign))


def has_foreign_object(image: np.ndarray, base_rc, head_rc, pixel_spacing_mm: float,
                       image_max: float | None = None) -> bool:
    """True when metal or another dense object covers the bone's measurement region."""
    fraction = foreign_object_fraction(image, base_rc, head_rc, pixel_spacing_mm, image_max)
    return fraction > FOREIGN_FRACTION_MAX
