"""Stage 2: the fingers, the hand's size, its axis and its thumb.

Takes the body mask of the working copy (:class:`analysis.locate.body._Work`, pixels of about
0.5 mm); gives the fingers as :class:`_Finger` (working pixels), the hand axis ``u`` (wrist to
fingers), the thumb side ``v``, the thumb when it shows as a finger, and fingers II-V ordered
from the thumb side, with the finger spacing ``s`` (working pixels) that sets every later length.
Fingers are protrusions that an opening with a disk wider than a finger removes; several hand
sizes (HAND_SCALES x FINGER_RADII_MM) are tried until five fingers show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from analysis.image_kernels import dilate_cross, distance_to_background, open_cross

if TYPE_CHECKING:
    from analysis.locate.body import _Work

# Values were set on the 10 adult PA hands of ../shared/data/real-hands (assumed 0.1 mm/px)
# and checked on the phantom (tests/phantom.py) at 0.08-0.2 mm/px.
FINGER_RADII_MM = (10.0, 13.0, 8.0)
"""Opening radii that separate fingers (narrower) from the palm (wider), mm, in order of trial."""
THUMB_WIDTH_WEIGHT = 3.0
"""Weight of the log width ratio (end finger / the others' median) in the thumb score, next to its
proximal offset (finger spacings) and angle (per 30 degrees)."""
FOREIGN_FINGER_GAP = 2.0
"""A finger whose base lies more than this many times the II-III-IV spacing beyond the ring finger
is not this hand's little finger."""
THUMB_MAX_WIDTH_RATIO = 1.6
"""Broader than this many times the other fingers' median width, an end lobe is no thumb."""
HAND_SCALES = (1.0, 0.75, 0.55, 1.4)
"""Relative hand sizes tried, in order, when the fingers do not show at the nominal size: a child's
hand, a small adult's, or a pixel size that is wrong (a guessed spacing, magnification) make the
hand look smaller or larger in mm than an adult's. The hand's own finger spacing sets every
later length."""
SLIVER_ELONGATION = 12.0
"""A protrusion longer than this many widths is a sliver along a field edge (fingers, with the part of
the hand the opening cuts off with them, reach about 9 on FracAtlas thumbnails; slivers 14-30)."""
FINGER_MIN_LENGTH_MM = 22.0
"""A protrusion shorter than this is no finger (a marker touching the skin, a styloid)."""


@dataclass(eq=False)
class _Finger:
    """One finger (or finger-like protrusion) of the body mask, in working pixels ``(row, col)``."""

    base_rc: np.ndarray  # where it leaves the palm (working pixels)
    tip_rc: np.ndarray
    length_px: float
    width_px: float
    area_px: int
    label: int

    @property
    def direction(self) -> np.ndarray:
        """Unit vector from base to tip ``(d_row, d_col)``."""
        d = self.tip_rc - self.base_rc
        return d / (np.hypot(*d) + 1e-12)


def _open_disk(mask: np.ndarray, radius_px: float, dist: np.ndarray | None = None) -> np.ndarray:
    """Binary opening with a disk, via two distance transforms (fast for large radii).

    ``dist`` may pass in the mask's distance transform when it is reused for several radii.
    """
    eroded = (distance_to_background(mask) if dist is None else dist) > radius_px
    rows = np.flatnonzero(eroded.any(axis=1))
    if rows.size == 0:
        return eroded
    cols = np.flatnonzero(eroded.any(axis=0))
    # Only pixels within radius_px of the eroded set can be in the opening: the second transform
    # runs on its bounding box grown by the radius (every eroded pixel is inside, so the
    # distances there are the whole image's).
    pad = int(math.ceil(radius_px)) + 1
    r0, r1 = max(0, rows[0] - pad), min(mask.shape[0], rows[-1] + pad + 1)
    c0, c1 = max(0, cols[0] - pad), min(mask.shape[1], cols[-1] + pad + 1)
    opened = np.zeros(mask.shape, bool)
    opened[r0:r1, c0:c1] = distance_to_background(~eroded[r0:r1, c0:c1]) <= radius_px
    return opened


def _find_fingers(body: np.ndarray, spacing_mm: float, finger_radius_mm: float,
                  dist: np.ndarray | None = None) -> tuple[list[_Finger], np.ndarray]:
    """Protrusions thinner than ``2 * finger_radius_mm``: fingers (and thumb) on a PA hand."""
    radius_px = finger_radius_mm / spacing_mm
    palm = _open_disk(body, radius_px, dist)
    thin = body & ~palm
    thin = open_cross(thin)
    lab, n = ndi.label(thin)
    near_palm = dilate_cross(palm, iterations=2)
    fingers = []
    min_len = 1.2 * radius_px
    rows, cols = body.shape
    for k, box in enumerate(ndi.find_objects(lab), start=1):
        if box is None:
            continue
        m = lab[box] == k
        area = int(m.sum())
        if area < 0.8 * radius_px**2:
            continue
        offset = np.array([box[0].start, box[1].start])
        base_pix = np.argwhere(m & near_palm[box])
        if base_pix.shape[0] < 2:
            continue  # free-floating piece (e.g. an edge fragment), not a finger
        base = base_pix.mean(axis=0) + offset
        pix = np.argwhere(m) + offset
        d = np.hypot(*(pix - base).T)
        tip = pix[np.argmax(d)].astype(float)
        length = float(d.max())
        if length < min_len:
            continue
        width = area / max(length, 1.0)
        if width > 1.6 * radius_px * 2 or width < 0.3 * radius_px:
            continue  # a broad lobe, or a sliver of tissue along an edge, not a finger
        on_edge = (pix[:, 0] <= 1) | (pix[:, 0] >= rows - 2) | (pix[:, 1] <= 1) | (pix[:, 1] >= cols - 2)
        if on_edge.sum() > 4.0 * width:
            continue  # runs along the image border: the rim of a cut-off limb
        fingers.append(_Finger(base, tip, length, width, area, k))
    return fingers, palm


def _finger_cluster(fingers: list[_Finger]) -> list[_Finger]:
    """The fingers of one hand: candidates pointing the same way with bases close together.

    Spurious protrusions (the ends of a bracelet, a fold of tissue, the edge of a cut-off limb)
    are short or point elsewhere and fall out.
    """
    # A strip many widths long is a sliver of tissue along a field edge, not a finger; left in,
    # it would set the length scale and push the short fingers (V, the thumb) out.
    fingers = [f for f in fingers if f.length_px <= SLIVER_ELONGATION * f.width_px]
    if not fingers:
        return []
    longest = max(f.length_px for f in fingers)
    cands = [f for f in fingers if f.length_px >= 0.3 * longest]
    best: list[_Finger] = []
    for f in cands:
        reach = 2.5 * f.length_px
        group = [
            h
            for h in cands
            if float(np.dot(f.direction, h.direction)) > math.cos(math.radians(50))
            and np.hypot(*(h.base_rc - f.base_rc)) < reach
        ]
        if len(group) > len(best) or (
            len(group) == len(best) and sum(h.length_px for h in group) > sum(h.length_px for h in best)
        ):
            best = group
    if not best:
        return []
    # Add a thumb pointing further away (up to ~80 deg) from the mean finger direction.
    u = np.mean([h.direction for h in best], axis=0)
    u /= np.hypot(*u) + 1e-12
    centre = np.mean([h.base_rc for h in best], axis=0)
    spread = max(np.max([np.hypot(*(h.base_rc - centre)) for h in best]), 1.0)
    for f in cands:
        if any(f is h for h in best):
            continue
        if float(np.dot(f.direction, u)) > math.cos(math.radians(85)) and np.hypot(*(f.base_rc - centre)) < 2.5 * spread + f.length_px:
            best.append(f)
    return best


def _thumb_and_axis(cluster: list[_Finger], body: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[_Finger], dict]:
    """Hand axis ``u``, thumb direction ``v`` and the fingers ordered from the thumb side.

    Returns ``ordered`` with the thumb first when it was found as a finger, else the four
    long fingers starting from the thumb side.
    """
    info: dict = {}
    dirs = np.array([f.direction for f in cluster])
    bases = np.array([f.base_rc for f in cluster])
    u = dirs.mean(axis=0)
    u /= np.hypot(*u) + 1e-12
    v = np.array([u[1], -u[0]])
    for _ in range(2):
        order = np.argsort(bases @ v)
        ordered = [cluster[i] for i in order]
        if len(ordered) < 3:
            break
        # Proximal offset of each end finger's base relative to its neighbours, in units of the
        # finger spacing: the thumb leaves the hand far proximal to the others.
        spacing = np.median(np.diff(np.sort(bases @ v))) + 1e-9
        scores = []
        # rest: the other fingers, nearest first (the neighbours set the reference level)
        for end, rest in ((ordered[0], ordered[1:]), (ordered[-1], ordered[-2::-1])):
            prox = (np.mean([f.base_rc @ u for f in rest[:2]]) - end.base_rc @ u) / spacing
            angle = math.degrees(math.acos(np.clip(np.dot(end.direction, np.mean([f.direction for f in rest], 0) / (np.hypot(*np.mean([f.direction for f in rest], 0)) + 1e-12)), -1, 1)))
            # The thumb is the broadest finger, the little finger the narrowest (real hands and
            # phantoms: 1.05-1.5 vs 0.7-0.92 of the others' median width): decisive when an
            # adducted thumb leaves the hand nearly parallel to the fingers.
            # A lobe much broader than a thumb is fingers lying over each other (an oblique view):
            # no thumb evidence.
            width_ratio = end.width_px / max(float(np.median([f.width_px for f in rest])), 1e-9)
            width_term = math.log(max(width_ratio, 1e-3)) if width_ratio <= THUMB_MAX_WIDTH_RATIO else 0.0
            scores.append(prox + angle / 30.0 + THUMB_WIDTH_WEIGHT * width_term)
        info["thumb_scores"] = [round(float(s), 2) for s in scores]
        thumb_end = int(np.argmax(scores))
        if len(cluster) == 5 or scores[thumb_end] > 1.5:
            thumb = ordered[0] if thumb_end == 0 else ordered[-1]
            others = [f for f in cluster if f is not thumb]
            u = np.mean([f.direction for f in others], axis=0)
            u /= np.hypot(*u) + 1e-12
            v = np.array([u[1], -u[0]])
            side = np.sign((thumb.base_rc - np.mean([f.base_rc for f in others], 0)) @ v) or 1.0
            v = v * side
            info["thumb_from"] = "finger"
            rest = sorted(others, key=lambda f: -(f.base_rc @ v))
            return u, v, [thumb] + rest, info
    # No thumb among the fingers: the thenar side of the palm carries more tissue beside the
    # outermost fingers.
    proj = bases @ v
    lo, hi = proj.min(), proj.max()
    spacing = (hi - lo) / max(len(cluster) - 1, 1)
    pts = np.argwhere(body).astype(float)
    along = pts @ u
    web = np.min(bases @ u)
    band = (along < web) & (along > web - 4 * spacing)
    side = pts[band] @ v
    left = np.count_nonzero(side < lo - 0.5 * spacing)
    right = np.count_nonzero(side > hi + 0.5 * spacing)
    info["thumb_from"] = "thenar"
    info["thenar_counts"] = (int(left), int(right))
    if left > right:
        v = -v
    rest = sorted(cluster, key=lambda f: -(f.base_rc @ v))
    return u, v, rest, info


def _complete_fingers(three: list[_Finger], v: np.ndarray) -> list[_Finger]:
    """Four fingers II-V from three found ones, ordered from the thumb side (``v``).

    Where two found fingers are twice as far apart as the other pair, the missing finger lies
    between them; otherwise it is the little finger, one spacing beyond the last, leaving the
    palm a third of a spacing more proximally.
    """
    proj = np.array([f.base_rc @ v for f in three])
    gaps = np.abs(np.diff(proj))
    direction = np.mean([f.direction for f in three], axis=0)
    direction /= np.hypot(*direction) + 1e-12
    length = float(np.median([f.length_px for f in three]))
    width = float(np.median([f.width_px for f in three]))
    if gaps.max() > 1.6 * gaps.min():
        k = int(np.argmax(gaps))
        base = 0.5 * (three[k].base_rc + three[k + 1].base_rc)
        slot = k + 1
    else:
        step = float(np.median(gaps))
        base = three[-1].base_rc - step * v - step / 3.0 * direction
        slot = 3
    virtual = _Finger(base, base + length * direction, length, width, int(length * width), -1)
    return three[:slot] + [virtual] + three[slot:]


def _best_finger_cluster(w: _Work, details: dict) -> list[_Finger]:
    """The fingers of the hand in ``w.body`` (working pixels of ``w.spacing_mm`` mm).

    Fingers are 10-25 mm thick depending on the hand and on the (possibly assumed) pixel size:
    every opening radius FINGER_RADII_MM (mm) at every hand scale HAND_SCALES is tried in order
    (radii under 2 working pixels skipped); the first cluster of five fingers wins, else the
    largest (at most five). Protrusions shorter than ``0.5 * scale * FINGER_MIN_LENGTH_MM`` are
    dropped. Records ``finger_radius_mm`` (mm) and ``hand_scale`` in ``details``.
    """
    cluster: list[_Finger] = []
    body_dist = distance_to_background(w.body)
    trials = [(radius_mm * scale, scale) for scale in HAND_SCALES for radius_mm in FINGER_RADII_MM]
    for radius_mm, scale in trials:
        if radius_mm / w.spacing_mm < 2.0:
            continue  # narrower than the working pixels can show
        fingers, _palm = _find_fingers(w.body, w.spacing_mm, radius_mm, body_dist)
        fingers = [f for f in fingers if f.length_px * w.spacing_mm >= 0.5 * scale * FINGER_MIN_LENGTH_MM]
        candidate = _finger_cluster(fingers)
        if len(candidate) > len(cluster) and len(candidate) <= 5:
            cluster = candidate
            details["finger_radius_mm"] = round(radius_mm, 1)
            details["hand_scale"] = scale
        if len(cluster) == 5:
            break
    return cluster


def _number_fingers(cluster: list[_Finger], body: np.ndarray, details: dict):
    """Thumb, hand axis and fingers II-V from a cluster of at least four fingers.

    ``body``: the body mask (working pixels). Returns ``(u, v, thumb, four)``: unit vectors
    ``(d_row, d_col)`` from wrist to fingers and towards the thumb, the thumb's :class:`_Finger`
    or None when it did not show as a finger, and fingers II-V ordered from the thumb side (with
    the thumb and three fingers, the fourth is predicted: :func:`_complete_fingers`). ``four``
    has fewer than four fingers when no PA hand shows. Records the thumb evidence in ``details``.
    """
    u, v, ordered, info = _thumb_and_axis(cluster, body)
    details.update(info)
    thumb = ordered[0] if info.get("thumb_from") == "finger" else None
    four = (ordered[1:] if thumb is not None else ordered)[:4]
    if len(four) == 4 and thumb is not None:
        # A "little finger" far beyond the ring finger belongs to something else beside the hand
        # (the other hand, a fold of tissue): fingers II-V leave the palm about evenly spaced.
        proj = np.array([f.base_rc @ v for f in four])
        gaps = np.abs(np.diff(proj))
        if gaps[2] > FOREIGN_FINGER_GAP * float(np.median(gaps[:2])):
            four = four[:3]
            details["foreign_finger_dropped"] = True
    if len(four) == 3 and thumb is not None:
        # The thumb and three fingers: the fourth is bent, hidden behind a neighbour or too short
        # to leave the palm. Its place is predicted from the others; the shaft lines below are
        # then fitted to the bone ridges, and the PA checks judge the result.
        four = _complete_fingers(four, v)
        details["fingers_predicted"] = 1
    return u, v, thumb, four


def _finger_spacing(four: list[_Finger], v: np.ndarray, spacing_mm: float, details: dict) -> float:
    """``s``: the median distance (working pixels) between neighbouring fingers II-V where they
    leave the palm, measured along the thumb direction ``v``; ``spacing_mm`` is the working pixel
    size (mm), for ``details["finger_spacing_mm"]``."""
    bases = np.array([f.base_rc for f in four])
    s = float(np.median(np.abs(np.diff(bases @ v))))
    details["finger_spacing_mm"] = round(s * spacing_mm, 1)
    return s
