"""Radiogrammetric indices from cortical thickness T, outer width W and length L (all mm).

Definitions (sources in docs/method.md and ../shared/research/dxr-method.md):

* ``MCI = 2 T / W`` - the classical metacarpal index (not BoneXpert's A/W^2).
* ``VPA = pi T (1 - T/W)`` in mm - bone volume per projected area of a hollow cylinder, A/W.
* ``BHI = 10 pi T (1 - T/W) / (L W)^0.33`` - Bone Health Index on the published scale: the
  formula in mm gives values ten times smaller than published BHI values (dxr-method.md 1.6),
  so the factor ``BHI_SCALE = 10`` is applied. Exponent 0.33 as on the BoneXpert product page.
* ``DXR-BMD = RHO_G_CM3 * VPA_cm * (1 - p)`` in g/cm^2, with ``p`` the porosity estimate.
  ``RHO_G_CM3`` is chosen so that T = 2.0 mm, W = 8.0 mm (a typical young-adult woman) gives the
  published young-adult mean 0.598 g/cm^2 (Black et al. 2001): 0.598 / (pi * 0.20 cm * 0.75)
  = 1.269 g/cm^3, the order of cortical tissue mineral density. ``p`` is 0 until a porosity
  estimate is validated (``POROSITY = 0.0``, reported with every result).

Combining metacarpals II-IV (fixed): the mean T, mean W and mean L of the measured bones are
computed first, and the combined indices are computed from those means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

RHO_G_CM3 = 1.269
"""Calibration constant of DXR-BMD (g/cm^3)."""
POROSITY = 0.0
"""Porosity estimate p used in DXR-BMD (unitless); 0 = not estimated yet."""
BHI_SCALE = 10.0
"""Factor from the mm formula to published BHI values (unitless; dxr-method.md 1.6)."""
BHI_EXPONENT = 0.33
"""Exponent of (L * W) in the BHI denominator, L and W in mm (BoneXpert product page)."""


def mci(t_mm: float, w_mm: float) -> float:
    """Metacarpal index 2T/W (unitless)."""
    return 2.0 * t_mm / w_mm


def vpa_mm(t_mm: float, w_mm: float) -> float:
    """Volume per area pi*T*(1 - T/W) (mm)."""
    return math.pi * t_mm * (1.0 - t_mm / w_mm)


def bhi(t_mm: float, w_mm: float, l_mm: float) -> float:
    """Bone Health Index 10*pi*T*(1 - T/W)/(L*W)^0.33, T, W, L in mm (published scale)."""
    return BHI_SCALE * vpa_mm(t_mm, w_mm) / (l_mm * w_mm) ** BHI_EXPONENT


def dxr_bmd_g_cm2(t_mm: float, w_mm: float, porosity: float = POROSITY) -> float:
    """DXR-BMD = RHO_G_CM3 * VPA (cm) * (1 - porosity), in g/cm^2."""
    return RHO_G_CM3 * vpa_mm(t_mm, w_mm) / 10.0 * (1.0 - porosity)


@dataclass(frozen=True)
class Indices:
    """Combined indices of one hand: mean T, W, L (mm), then MCI (unitless), VPA (mm), BHI
    (unitless, None without every bone's length), porosity (unitless), DXR-BMD (g/cm^2)."""

    cortical_thickness_mm: float
    outer_width_mm: float
    length_mm: float | None
    mci: float
    vpa_mm: float
    bhi: float | None
    porosity: float
    dxr_bmd_g_cm2: float


def combine(bones: Sequence[tuple[float, float, float | None]], porosity: float = POROSITY) -> Indices:
    """Combined indices over the measured bones: average T, W, L first, then the formulas.

    Parameters
    ----------
    bones : sequence of (T_mm, W_mm, L_mm or None)
        One entry per measured metacarpal (two or three of II-IV).
    porosity : float
        Porosity estimate p (unitless) for DXR-BMD.

    Returns
    -------
    Indices
        ``length_mm`` and ``bhi`` are None unless every bone has a length.
    """
    if not bones:
        raise ValueError("no measured bones to combine")
    t = sum(b[0] for b in bones) / len(bones)
    w = sum(b[1] for b in bones) / len(bones)
    lengths = [b[2] for b in bones if b[2]]
    length = sum(lengths) / len(lengths) if len(lengths) == len(bones) else None
    return Indices(
        cortical_thickness_mm=t,
        outer_width_mm=w,
        length_mm=length,
        mci=mci(t, w),
        vpa_mm=vpa_mm(t, w),
        bhi=bhi(t, w, length) if length else None,
        porosity=porosity,
        dxr_bmd_g_cm2=dxr_bmd_g_cm2(t, w, porosity),
    )
