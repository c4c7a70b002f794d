"""Stage 6: skeletal maturity from the carpus: an ossified carpus is an adult's, a mostly
cartilaginous one a young child's (DXR-BMD is only defined for adults).

Takes the working copy, the canonical hand, the shaft lines of II-V and the first-pass ends
(canonical pixels); gives the ossified share of the carpus (0..1) and the verdict ``adult`` /
``immature`` / None (not judged).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from analysis.locate.frame import _along, _CanonicalHand
from analysis.locate.shafts import NAMES, _Shafts

if TYPE_CHECKING:
    from analysis.locate.body import _Work

CARPAL_FILL_MIN = 0.1
"""Below this ossified fraction of the least ossified band of the carpus the hand is a young
child's. Set low because an adult must never be called a child and the fill is a level measured
on a display curve: a sigmoid or gamma display that darkens the gaps between carpal bones lowers
an adult's fill (adult phantoms 0.6-0.7 on a linear display, 0.14-0.5 on a sigmoid one;
FracAtlas PA adult thumbnails: 1st-3rd lowest 0.05, 0.25, 0.31, median 0.94; the FracAtlas 2-4
year old 0.0, child phantoms 0)."""
CARPAL_BAND = 0.2
"""Height of that band, as a fraction of L."""


def _carpal_fill(canon: np.ndarray, lines: np.ndarray, ends: dict, names: tuple[str, ...],
                 inside: np.ndarray | None = None) -> float | None:
    """Fraction of the carpus (just proximal to the metacarpal bases) that is ossified.

    An adult's carpus is a block of bone between the metacarpal bases and the radius; a young
    child's is mostly cartilage, which on a radiograph looks like soft tissue. Levels are
    relative: 0 = soft tissue between the shafts, 1 = shaft of MC III, threshold halfway.

    ``canon``: the canonical copy; ``lines``: shaft lines ``(a, b)`` of ``names`` (canonical
    pixels); ``ends``: name -> ``(head_y, base_y)``; ``inside``: where the canonical copy shows the
    hand within the field. Returns the ossified share (0..1) of the least ossified band of
    CARPAL_BAND * L(III) from 0.05 L distal to 0.6 L proximal of the bases of II-IV, or None when
    II-IV are not all traced or the carpus is not (80 %) in the field.
    """
    if not all(n in ends for n in ("II", "III", "IV")):
        return None
    k3 = names.index("III")
    a3, b3 = lines[k3]
    head3, base3 = ends["III"]
    length = base3 - head3
    if length <= 2:
        return None
    h, w = canon.shape
    # Bone level: centre of the III shaft; soft tissue: midway between III and IV shafts.
    ys = np.linspace(head3 + 0.35 * length, head3 + 0.65 * length, 15)
    bone_level = float(np.median(_along(canon, a3, b3, ys, 1.0)))
    k4 = names.index("IV")
    a4, b4 = lines[k4]
    soft_level = float(np.median(_along(canon, 0.5 * (a3 + a4), 0.5 * (b3 + b4), ys, 1.0)))
    if bone_level - soft_level <= 1e-6:
        return None
    base_y = float(np.mean([ends[n][1] for n in ("II", "III", "IV")]))
    x_lo = min(lines[names.index("IV")][0] + lines[names.index("IV")][1] * base_y,
               lines[names.index("II")][0] + lines[names.index("II")][1] * base_y)
    x_hi = max(lines[names.index("IV")][0] + lines[names.index("IV")][1] * base_y,
               lines[names.index("II")][0] + lines[names.index("II")][1] * base_y)
    # Rows from a little before the bases to well into the forearm; the least ossified band of
    # CARPAL_BAND * L is the verdict, so that where exactly the bases were put matters little:
    # an adult's carpus is bone all the way (joint spaces are thin), a young child's has a
    # wide band of cartilage somewhere between the metacarpals and the radius.
    y0, y1 = int(round(base_y - 0.05 * length)), int(round(base_y + 0.6 * length))
    x0, x1 = int(round(x_lo)), int(round(x_hi))
    y0, y1 = max(0, y0), min(h, y1)
    x0, x1 = max(0, x0), min(w, x1)
    band = max(2, int(round(CARPAL_BAND * length)))
    if y1 - y0 < band + 1 or x1 - x0 < 2:
        return None
    bony = ((canon[y0:y1, x0:x1] - soft_level) / (bone_level - soft_level)) > 0.5
    valid = inside[y0:y1, x0:x1] if inside is not None else np.ones_like(bony)
    if valid.mean() < 0.8:
        return None  # the carpus is (partly) outside the field or the hand: no verdict
    row_bone = bony.sum(axis=1).astype(float)
    row_valid = valid.sum(axis=1).astype(float)
    kernel = np.ones(band)
    fill = np.convolve(row_bone, kernel, "valid") / np.maximum(np.convolve(row_valid, kernel, "valid"), 1.0)
    return float(fill.min())


def _judge_maturity(w: _Work, hand: _CanonicalHand, shafts: _Shafts, ends: dict, details: dict) -> bool:
    """True when the carpus behind the first-pass bases (``ends``: name -> ``(head_y, base_y)``,
    canonical pixels) is mostly unossified (fill under CARPAL_FILL_MIN): a young child's hand.

    Judged before the hand scale is searched: a young child's unossified carpus offers no joint
    lines, so the scale search would wander into the forearm. Only the body inside the field
    (``w.body`` outside ``w.bands``) counts. Records ``carpal_fill`` and ``maturity`` (``adult``,
    ``immature`` or None) in ``details``.
    """
    inside = hand.frame.sample(((w.body) & ~w.bands).astype(float), order=0) > 0.5
    carpus = _carpal_fill(hand.canon, shafts.lines, ends, NAMES, inside)
    details["carpal_fill"] = None if carpus is None else round(carpus, 2)
    details["maturity"] = None if carpus is None else ("immature" if carpus < CARPAL_FILL_MIN else "adult")
    return carpus is not None and carpus < CARPAL_FILL_MIN
