"""Stage 3: the view, when the fingers of a PA hand do not show (lateral, oblique, not a hand),
and the PA check on the shaft lines (overlapping shafts: oblique).

Takes the working copy (:mod:`analysis.locate.body`) and the fingers found
(:mod:`analysis.locate.fingers`), or the shaft lines (:mod:`analysis.locate.shafts`); gives a
refusal (``not_pa_hand``, ``lateral_view``, ``oblique_view``) with the evidence in ``details``
(finger strip length in mm, palm ridge count).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from analysis.image_kernels import distance_to_background
from analysis.locate.fingers import FINGER_MIN_LENGTH_MM, _Finger
from analysis.locate.frame import _HandFrame
from analysis.locate.location import HandLocation, _refuse
from analysis.locate.ridges import RIDGE_SIGMA, _peaks_1d, _ridge_x, _tophat

if TYPE_CHECKING:
    from analysis.locate.body import _Work
    from analysis.locate.shafts import _Shafts

LATERAL_MAX_RIDGES = 3
"""With two or three finger strips: at most this many bone ridges across the palm behind them is a
lateral view (the metacarpals stacked), more an oblique one (fanned partly apart). FracAtlas
thumbnails: laterals 1-3 (a few 4-5), obliques 4-5."""
BODY_MAX_FINGER_AREAS = 300.0
"""Largest body part that is one hand (with its forearm), in squared finger widths (FracAtlas
thumbnails refused as lateral or oblique: 4 % of the lateral hands above it, about 40 % of the
chest and arm films)."""
FIELD_SIDE_CONTACT_MIN = 0.15
"""A body part that lies along three or more sides of the exposed field, each over at least this
share of the side's length, is larger than a hand with its forearm (a trunk, an arm beside it):
a hand enters the field from one side and its fingers may reach a second. FracAtlas thumbnails:
the third most touched side of PA adult hands at most 0.074 (median 0); of the not-a-hand films
median 0.107, and 0.21-0.46 on the nine full-resolution ones."""
FIELD_EDGE_MM = 1.5
"""How close (mm) to the image edge or an unexposed band counts as touching it: a finger strip
whose tip comes this close is cut; a body this close to a side of the exposed field lies along it."""
MIN_SHAFT_GAP = 0.45
"""Neighbouring shaft lines of II-V closer than this (in s, at mid-palm) overlap: not a PA view."""
MAX_SHAFT_GAP_RATIO = 2.2
"""Largest ratio of the widest to the narrowest gap between neighbouring shafts II-V on a PA hand
(FracAtlas PA thumbnails: median 1.26, 95th percentile 1.64; oblique hands taken for PA: median 1.9)."""
MAX_FINGER_ANGLE_DEG = 32.0
"""Largest angle (degrees) between one of fingers II-V and their mean direction on a PA hand.
Extended fingers leave the palm nearly parallel, spread ones fan by up to about 25 degrees each
(FracAtlas PA thumbnails located: at most 24.5); a curled finger ('ok' sign, semi-flexed hand)
or a half-turned hand points its strip far off the others (FracAtlas oblique thumbnails that
passed every other check: 6 of 11 beyond 25)."""
MIN_SHAFT_SUPPORT = 0.7
"""Least share of the mid-palm rows on which each of II-IV shows its own ridge on a PA hand
(FracAtlas PA thumbnails: 5th percentile 0.88; oblique hands taken for PA: median 0.53)."""


def _palm_ridge_count(w: _Work, cluster: list[_Finger]) -> int | None:
    """Bone ridges across the palm just proximal to the fingers found (their direction = up).

    A lateral view stacks the metacarpals: one or two ridges (with the thumb's). An oblique
    view fans them partly apart: three or more.

    ``w``: the working copy; ``cluster``: the fingers found (working pixels). The palm is sampled
    in a frame whose scale ``s`` is 1.2 median finger widths, at least 8 mm; ridges are counted
    across three bands 0.5-2.5 s proximal to the finger bases. Returns the median count, or None.
    """
    u = np.mean([f.direction for f in cluster], axis=0)
    norm = float(np.hypot(*u))
    if norm < 1e-6:
        return None
    u = u / norm
    v = np.array([u[1], -u[0]])
    base = np.mean([f.base_rc for f in cluster], axis=0)
    s = max(1.2 * float(np.median([f.width_px for f in cluster])), 8.0 / w.spacing_mm)
    frame = _HandFrame(base - 2.0 * s * u, u, v, (int(5 * s), int(6 * s)))
    canon = frame.sample(w.g)
    ridge = _ridge_x(_tophat(canon, int(round(0.7 * s))), 0.25 * s, RIDGE_SIGMA * s)
    yb, _ = frame.from_work(np.array(base[0]), np.array(base[1]))
    counts = []
    for k0, k1 in ((0.5, 1.5), (1.0, 2.0), (1.5, 2.5)):
        band = ridge[max(0, int(yb + k0 * s)) : max(0, int(yb + k1 * s))]
        if band.shape[0] == 0:
            continue
        prof = band.mean(axis=0)
        if prof.max() <= 0:
            continue
        counts.append(int(_peaks_1d(prof, 0.25 * prof.max()).size))
    return int(np.median(counts)) if counts else None


def _non_pa_view(w: _Work, cluster: list[_Finger], details: dict) -> HandLocation:
    """Refusal for an image where the four fingers of a PA hand were not found side by side.

    ``w``: the working copy with its body mask; ``cluster``: the finger strips found (working
    pixels). No finger at all (or one short nub): not a hand (a chest, a knee, a forearm alone).
    A body part many hands large (a chest, a whole arm with the trunk) or two or more finger
    strips one of which runs out of the field: no whole hand to judge, ``not_pa_hand``. One finger-long strip: the stacked
    fingers of a lateral view. Two or three strips: lateral when the palm just behind them shows
    at most LATERAL_MAX_RIDGES bone ridges (the metacarpals stacked), oblique when it shows more
    (fanned partly apart).
    """
    details.update(fingers_found=len(cluster))
    if not cluster:
        return _refuse("not_pa_hand", details=details)
    if len(cluster) == 1:
        f = cluster[0]
        details["finger_strip_length_mm"] = round(float(f.length_px * w.spacing_mm), 1)
        if f.length_px * w.spacing_mm < FINGER_MIN_LENGTH_MM:
            # A nub (a marker touching the skin, a styloid) is no finger: no hand in view.
            return _refuse("not_pa_hand", details=details)
    whole = _no_whole_hand(w, cluster, details)
    if whole is not None:
        return whole
    if len(cluster) == 1:
        # One strip of finger length: the four fingers stacked one over the other (a lateral view).
        # An oblique hand fans its fingers at least partly apart (on the FracAtlas thumbnails, 96 %
        # of single-strip hands are lateral views).
        details["finger_strip_elongation"] = round(float(cluster[0].length_px / max(cluster[0].width_px, 1e-6)), 2)
        return _refuse("lateral_view", view="lateral", details=details)
    ridges = _palm_ridge_count(w, cluster)
    details["palm_ridges"] = ridges
    if ridges is not None and ridges <= LATERAL_MAX_RIDGES:
        return _refuse("lateral_view", view="lateral", details=details)
    return _refuse("oblique_view", view="oblique", details=details)


def _no_whole_hand(w: _Work, cluster: list[_Finger], details: dict) -> HandLocation | None:
    """``not_pa_hand`` when the strips found are not the fingers of one whole hand, else None.

    In units of the strips' median width (a finger's, or a few stacked fingers'): a hand with its
    forearm covers about 70-130 (FracAtlas lateral and oblique hands: medians 69 and 125, 4 % of the
    laterals over 300); a chest or a whole arm with the trunk covers far more (BODY_MAX_FINGER_AREAS), or lies
    along three sides of the field (FIELD_SIDE_CONTACT_MIN). Of two or more
    strips, one whose tip touches the image edge or an unexposed band is a finger cut by the
    field, or the rim of a limb running out of it: no whole hand to judge the view of. (A single
    strip stays a lateral view's stacked fingers.)
    """
    width = float(np.median([f.width_px for f in cluster]))
    body_areas = float(np.count_nonzero(w.body)) / max(width, 1.0) ** 2
    details["body_finger_areas"] = round(body_areas)
    details["field_sides_touched"] = sides = _field_sides_touched(w)
    if body_areas > BODY_MAX_FINGER_AREAS or sides >= 3:
        return _refuse("not_pa_hand", "The image shows a larger body part (chest, arm or trunk), not a hand "
                       "radiograph.", details=details)
    if len(cluster) < 2:
        return None  # one strip: a lateral view's stacked fingers, judged as such even when cut
    rows, cols = w.body.shape
    margin = max(2.0, FIELD_EDGE_MM / w.spacing_mm)
    near_band = distance_to_background(~w.bands) if w.bands.any() else None
    for f in cluster:
        r, c = (float(x) for x in f.tip_rc)
        at_edge = r < margin or c < margin or r > rows - 1 - margin or c > cols - 1 - margin
        at_band = near_band is not None and near_band[int(round(r)), int(round(c))] < margin
        if at_edge or at_band:
            details["fingers_cut_by_field"] = True
            return _refuse("not_pa_hand", "No whole hand in the image: the fingers run out of the field.",
                           details=details)
    return None


def _field_sides_touched(w: _Work) -> int:
    """How many sides of the exposed field (the image without its unexposed bands ``w.bands``;
    its bounding box) the body mask ``w.body`` lies along, over at least FIELD_SIDE_CONTACT_MIN
    of the side's length, within FIELD_EDGE_MM of it (working pixels of ``w.spacing_mm``)."""
    field = ~w.bands
    rows = np.flatnonzero(field.mean(axis=1) > 0.5)
    cols = np.flatnonzero(field.mean(axis=0) > 0.5)
    if rows.size == 0 or cols.size == 0:
        return 0
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    depth = max(2, int(round(FIELD_EDGE_MM / w.spacing_mm)))
    body = w.body
    sides = (body[r0 : r0 + depth, c0:c1].any(axis=0), body[r1 - depth : r1, c0:c1].any(axis=0),
             body[r0:r1, c0 : c0 + depth].any(axis=1), body[r0:r1, c1 - depth : c1].any(axis=1))
    return sum(float(side.mean()) >= FIELD_SIDE_CONTACT_MIN for side in sides)


def _fingers_not_parallel(four: list[_Finger], u: np.ndarray, details: dict) -> bool:
    """True when one of the four fingers II-V points more than MAX_FINGER_ANGLE_DEG away from the
    hand axis ``u`` (their mean direction, unit vector in working pixels): curled fingers or a
    turned hand, not a PA view. Records ``finger_angle_max_deg`` in ``details``."""
    cosines = [float(np.clip(f.direction @ u, -1.0, 1.0)) for f in four]
    angle = float(np.degrees(np.arccos(min(cosines))))
    details["finger_angle_max_deg"] = round(angle, 1)
    return angle > MAX_FINGER_ANGLE_DEG


def _shafts_overlap(shafts: _Shafts, details: dict, exclude: set[str] = frozenset()) -> bool:
    """PA check on the shaft lines of II-V (``shafts``, canonical frame in finger spacings s).

    True (an oblique view) when two neighbouring shafts lie closer than MIN_SHAFT_GAP s at
    mid-palm, when the gaps between neighbours differ by more than MAX_SHAFT_GAP_RATIO (a PA hand's
    metacarpals are evenly spaced; a rotated hand crowds some of them), or when one of II-IV
    shows a clean ridge along less than MIN_SHAFT_SUPPORT of the mid-palm band (a shaft lying over
    its neighbour). Bones in ``exclude`` (metal over them: its edges break the ridge) are not
    judged by their ridge.
    """
    gaps = np.asarray(shafts.gaps, float)
    if gaps.size == 3 and (shafts.support[3] < MIN_SHAFT_SUPPORT or "V" in exclude):
        gaps = gaps[:2]  # V's line went astray (not measured; often beside another hand or a ring)
    details["shaft_gap_ratio"] = round(float(gaps.max() / max(gaps.min(), 1e-6)), 2) if gaps.size else None
    hidden = [n for k, n in enumerate(("II", "III", "IV")) if shafts.support[k] < MIN_SHAFT_SUPPORT and n not in exclude]
    return bool(np.any(gaps < MIN_SHAFT_GAP) or (gaps.size and gaps.max() > MAX_SHAFT_GAP_RATIO * gaps.min()) or hidden)
