"""Stage 5: the joints at either end of each shaft line: heads (MCP) and bases (CMC) of I-V.

Takes the full-resolution image (pixel size in mm), the canonical hand
(:class:`analysis.locate.frame._CanonicalHand`, finger spacing ``s``) and the shaft lines
(:class:`analysis.locate.shafts._Shafts`); gives, per bone, the canonical ``y`` of its head and
base, then :class:`analysis.locate.location.MetacarpalAxis` in image pixels with its length in mm.
Joint spaces are narrow dark bands between bright subchondral plates, found on the
full-resolution axial profile by a second-derivative filter of JOINT_SIGMA_MM. The head is the
first strong one distal to mid-shaft; the bases of II-V are placed at one common hand scale
(:func:`_bases_by_scale`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from analysis.image_kernels import bilinear
from analysis.locate.frame import _along, _CanonicalHand, _HandFrame, _to_image_rc
from analysis.locate.location import MetacarpalAxis
from analysis.locate.ridges import RIDGE_SIGMA, _ridge_x, _tophat
from analysis.locate.shafts import NAMES, _fit_shaft_lines, _Shafts

if TYPE_CHECKING:
    from analysis.locate.body import _Work
    from analysis.locate.fingers import _Finger

# Lengths in "s" are multiples of the finger spacing (the distance between neighbouring fingers
# where they leave the palm), the hand's own scale; "L" is bone length. Values were set on the
# 10 adult PA hands of ../shared/data/real-hands (assumed 0.1 mm/px) and checked on the phantom.

RELATIVE_LENGTH = {"I": 0.72, "II": 1.07, "III": 1.0, "IV": 0.87, "V": 0.82}
"""Metacarpal lengths relative to MC III (adult anatomy)."""
_LENGTH_PER_SPACING = 2.75
"""First guess of L(III) in s (median on the real hands; the hand's own scale replaces it)."""
BASE_WINDOW = (0.7, 1.35)
BASE_PRIOR_SD = 0.2
"""First pass: the base is the strongest joint line within BASE_WINDOW of the expected length,
weighted by a Gaussian of this relative SD about it."""
SCALE_RANGE = (2.2, 4.2)
"""Plausible L(III) in s (real hands 2.4-3.3, the phantom 3.6)."""
SCALE_TOLERANCE = 0.06
"""Relative tolerance of a base position about the common hand scale."""
SCALE_PEAK_FRACTION = 0.6
"""A hand scale whose joint-line score reaches this fraction of the best is a candidate; the
shortest candidate wins (the carpometacarpal line, not the midcarpal one behind it)."""

HEAD_TOPHAT = 1.3
"""Top-hat size (in s) for the bone signal along a shaft."""
HEAD_SEARCH = 2.8
"""How far distal to mid-shaft (in s) the MCP joint is looked for."""
HEAD_FROM_WEB = (-0.3, 2.0)
"""Where the MCP joint may lie relative to where the finger leaves the palm (in s, + = proximal)."""
RING_METAL_RATIO = 2.5
"""Along a shaft line distal to mid-shaft, a profile this many times its median is metal (a ring)."""
HEAD_VALLEY_FRACTION = 0.7
"""The MCP joint is the first joint line distal to mid-shaft at least this fraction as strong as
the strongest in the search window."""
HEAD_BAND = 0.15
"""Half-width (in s) of the band averaged along a shaft on the working copy."""
FINE_BAND_MM = 1.5
"""Half-width (mm) of the band averaged along a shaft on the full-resolution image."""
JOINT_SIGMA_MM = 0.4
"""Scale (mm) of the second-derivative filter that finds joint spaces (1-2 mm dark bands)."""

THUMB_WINDOW = (0.2, 1.6)
"""Where metacarpal I's shaft lies relative to the thumb's base (in s), for its line fit."""
THUMB_SEED_WINDOW = (0.4, 1.2)
"""Rows (in s from the thumb's base) whose mean ridge seeds metacarpal I's line."""
THUMB_WEB_OFFSET = 0.0
"""Where the thumb's MCP joint is looked for, relative to where the thumb leaves the palm (in s):
the thumb's web is deep."""


def _fine_profile_sampler(image, frame, factor, a, b, pixel_spacing_mm):
    """``fine(y0, y1)``: the canonical-frame line ``x = a + b*y`` from y0 to y1, sampled on the
    full-resolution image in 0.1 mm steps and +-FINE_BAND_MM across; returns the canonical ``y``
    of each sample, the profile values and the step (mm)."""
    step_px = max(1.0, 0.1 / pixel_spacing_mm)

    def fine(y0, y1):
        p0 = np.array(_to_image_rc(frame, factor, y0, a + b * y0))
        p1 = np.array(_to_image_rc(frame, factor, y1, a + b * y1))
        t, vals = _axial_profile(image, p0, p1, step_px, FINE_BAND_MM / pixel_spacing_mm)
        return y0 + t * (y1 - y0), vals, step_px * pixel_spacing_mm

    return fine


def _axial_profile(image: np.ndarray, p0: np.ndarray, p1: np.ndarray, step_px: float, half_width_px: float):
    """Mean of ``image`` across a band of +-half_width along p0 -> p1 (``(row, col)``)."""
    d = p1 - p0
    n = max(2, int(np.hypot(*d) / step_px) + 1)
    t = np.linspace(0.0, 1.0, n)
    pts = p0[None, :] + t[:, None] * d[None, :]
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-12)
    offs = np.linspace(-half_width_px, half_width_px, 5)
    vals = bilinear(image, pts[None, :, 0] + offs[:, None] * normal[0], pts[None, :, 1] + offs[:, None] * normal[1],
                    mode="nearest")
    return t, np.mean(vals, axis=0)


def _ends_along(profile_y: np.ndarray, prof: np.ndarray, raw: np.ndarray, ridge: np.ndarray, y_web: float, s: float, rel: float, fine=None, length_per_spacing: float = 0.0):
    """Head, first-guess base (canonical y) and shaft level of one metacarpal.

    Parameters
    ----------
    profile_y : ndarray
        Canonical ``y`` (pixels, increasing proximally) of the samples along the shaft line.
    prof, ridge, raw : ndarray
        Bone (top-hat) signal, ridge strength and flattened working image along the line.
    y_web : float
        Canonical ``y`` where the finger leaves the palm.
    s : float
        Finger spacing (canonical pixels).
    rel : float
        The bone's length relative to MC III.
    fine : callable, optional
        ``fine(y0, y1) -> (y, values, step_mm)``: the full-resolution axial profile between two
        canonical y (:func:`_fine_profile_sampler`); without it the working copy ``raw`` is used.
    length_per_spacing : float
        Expected L(III) in s (0: _LENGTH_PER_SPACING).

    Returns
    -------
    ``(head_y, base_y, level, 1.0)`` or None when no shaft or head shows. Mid-shaft is the
    strongest stretch of ridge; the head (MCP joint space) is the first strong joint line distal
    to it, within ``HEAD_FROM_WEB`` of ``y_web``. The first-guess base is the strongest joint line
    near ``length_per_spacing * s * rel`` proximal to the head (:func:`_bases_by_scale` then
    places the bases of all the bones at one hand scale).
    """
    step = float(profile_y[1] - profile_y[0]) if profile_y.size > 1 else 1.0
    mid = _mid_shaft(profile_y, prof, ridge, y_web, s)
    if mid is None:
        return None
    k0, level = mid
    head = _head_y(profile_y, raw, k0, y_web, s, step, fine)
    if head is None:
        return None
    expected = (length_per_spacing or _LENGTH_PER_SPACING) * s * rel
    base = head + expected
    if fine is not None:
        base = _first_base(fine, head, expected, base)
    return head, base, level, 1.0


def _mid_shaft(profile_y: np.ndarray, prof: np.ndarray, ridge: np.ndarray, y_web: float, s: float):
    """``(k0, level)``: index of mid-shaft along the profile (the strongest stretch of the shaft
    ridge 0.6-3.0 s proximal to ``y_web``: a clean hollow tube) and the median bone signal within
    0.3 s of it; None when there is no shaft (no positive bone signal 1.2-2.0 s proximal)."""
    shaft = (profile_y > y_web + 1.2 * s) & (profile_y < y_web + 2.0 * s)
    if not shaft.any():
        return None
    level = float(np.median(prof[shaft]))
    if level <= 0:
        return None
    # Mid-shaft: the strongest stretch of the shaft ridge (a clean hollow tube); from there walk
    # distally to the first clear dip of the bone signal, the MCP joint space.
    hump = (profile_y > y_web + 0.6 * s) & (profile_y < y_web + 3.0 * s)
    if not hump.any():
        return None
    k0 = int(np.argmax(np.where(hump, ridge, -np.inf)))
    near = np.abs(profile_y - profile_y[k0]) < 0.3 * s
    level = float(np.median(prof[near]))
    if level <= 0:
        return None
    return k0, level


def _head_y(profile_y: np.ndarray, raw: np.ndarray, k0: int, y_web: float, s: float, step: float, fine) -> float | None:
    """Canonical ``y`` of the MCP joint space distal to mid-shaft (index ``k0``), or None.

    Searched within HEAD_SEARCH s distal to mid-shaft and HEAD_FROM_WEB (in s) of ``y_web``; on
    the full-resolution profile ``fine`` (JOINT_SIGMA_MM filter) the most distal joint line at
    least HEAD_VALLEY_FRACTION as strong as the strongest, else on ``raw`` (working copy,
    ``step`` pixels per sample) the strongest.
    """
    # Joint spaces are narrow dark bands (about 1-2 mm) between the bright subchondral plates
    # of two bones: a strong positive second derivative of the axial profile at that scale.
    # The broad, less dense middle of a metacarpal head is not. The MCP joint space is the
    # strongest such band between mid-shaft and the PIP joint.
    # On real PA hands the MCP joint lies 0.2-1.0 finger spacings proximal to where the finger
    # leaves the palm (measured on ../shared/data/real-hands), and distal to mid-shaft.
    y_lo = float(max(profile_y[k0] - HEAD_SEARCH * s, y_web + HEAD_FROM_WEB[0] * s))
    y_hi = float(min(profile_y[k0], y_web + HEAD_FROM_WEB[1] * s))
    if y_hi - y_lo < 0.3 * s:
        y_lo, y_hi = float(profile_y[k0] - HEAD_SEARCH * s), float(profile_y[k0])
    if fine is not None:
        fy, fp, fstep_mm = fine(y_lo, y_hi)
        sig = max(1.0, JOINT_SIGMA_MM / fstep_mm)
        valley = ndi.gaussian_filter1d(fp, sig, order=2) * sig**2
        # A ring on the proximal phalanx: its edges are the strongest "joint lines" of the profile
        # and would outvote the MCP joint. Metal is far brighter than bone; its surroundings are
        # no joint space.
        level = float(np.median(fp))
        if level > 0:
            metal = ndi.binary_dilation(fp > RING_METAL_RATIO * level, iterations=int(np.ceil(3 * sig)))
            valley = np.where(metal, 0.0, valley)
        if valley.size < 3 or valley.max() <= 0:
            return None
        # The first strong joint line distal to mid-shaft: the MCP joint space. (The base of the
        # proximal phalanx can hold a similar line just beyond it.)
        strong = valley >= HEAD_VALLEY_FRACTION * float(valley.max())
        is_peak = np.r_[False, (valley[1:-1] >= valley[:-2]) & (valley[1:-1] >= valley[2:]), False]
        candidates = np.nonzero(strong & is_peak)[0]
        k = int(candidates.max()) if candidates.size else int(np.argmax(valley))  # fy increases proximally
        return float(fy[k])
    sig = max(1.0, 0.05 * s / step)
    valley = ndi.gaussian_filter1d(raw, sig, order=2) * sig**2
    stop = max(1, int(np.searchsorted(profile_y, y_lo)))
    seg = valley[stop:k0]
    if seg.size < 3 or seg.max() <= 0:
        return None
    return float(profile_y[stop + int(np.argmax(seg))])


def _first_base(fine, head: float, expected: float, base: float) -> float:
    """First-guess base (canonical y): the carpometacarpal joint, the strongest joint-like band
    within BASE_WINDOW of ``expected`` (pixels) proximal to ``head``, weighted by a Gaussian of
    relative SD BASE_PRIOR_SD about it; ``base`` when the profile shows no joint line."""
    fy, fp, fstep_mm = fine(head + BASE_WINDOW[0] * expected, head + BASE_WINDOW[1] * expected)
    sig = max(1.0, JOINT_SIGMA_MM / fstep_mm)
    valley = ndi.gaussian_filter1d(fp, sig, order=2) * sig**2
    if valley.size >= 3 and valley.max() > 0:
        # Strength of the joint line, weighted by how plausible its distance from the head is.
        prior = np.exp(-0.5 * ((fy - (head + expected)) / (BASE_PRIOR_SD * expected)) ** 2)
        base = float(fy[int(np.argmax(np.maximum(valley, 0.0) * prior))])
    return base


def _bases_by_scale(ends: dict, fines: dict, s: float, *, exclude: set, details: dict) -> dict:
    """Re-place the bases of the traced metacarpals at one common hand scale.

    ``ends``: name -> (head_y, base_y) in canonical y; ``fines``: name -> callable returning the
    full-resolution axial profile between two canonical y. The scale ``lam`` is the length of
    MC III in finger spacings ``s`` (canonical pixels), tried over SCALE_RANGE; each bone's base
    is expected at ``head + lam * RELATIVE_LENGTH[name] * s``. Bones in ``exclude`` (metal) do
    not vote. Returns name -> ``(head_y, base_y)``; records ``length_per_spacing`` (lam, in s).
    """
    voters = [n for n in ends if n not in exclude]
    if len(voters) < 2:
        return ends
    lams = np.linspace(SCALE_RANGE[0], SCALE_RANGE[1], 81)
    valleys = {}
    for n, (head, _) in ends.items():
        rel = RELATIVE_LENGTH[n] * s
        fy, fp, fstep_mm = fines[n](head + 0.9 * SCALE_RANGE[0] * rel, head + 1.1 * SCALE_RANGE[1] * rel)
        sig = max(1.0, JOINT_SIGMA_MM / fstep_mm)
        v = np.maximum(ndi.gaussian_filter1d(fp, sig, order=2) * sig**2, 0.0)
        if v.size < 3 or v.max() <= 0:
            continue
        valleys[n] = (fy, v / v.max())
    voters = [n for n in voters if n in valleys]
    if len(voters) < 2:
        return ends
    score = np.zeros(lams.size)
    for n in voters:
        fy, v = valleys[n]
        head = ends[n][0]
        rel = RELATIVE_LENGTH[n] * s
        # For every scale at once: the strongest joint line within tolerance of the predicted base.
        pred = head + lams * rel
        near = np.abs(fy[None, :] - pred[:, None]) <= (SCALE_TOLERANCE * lams * rel)[:, None]
        score += np.where(near, v[None, :], 0.0).max(axis=1)  # v >= 0: 0 where nothing is near
    # The most distal joint line that the bones agree on nearly as well as on the best one: the
    # carpometacarpal joints, not the midcarpal joint line further up, which is just as straight.
    peaks = [i for i in range(lams.size) if (i == 0 or score[i] >= score[i - 1])
             and (i == lams.size - 1 or score[i] >= score[i + 1])]
    good = [i for i in peaks if score[i] >= SCALE_PEAK_FRACTION * score.max()]
    lam = float(lams[min(good)]) if good else float(lams[int(np.argmax(score))])
    details["length_per_spacing"] = round(lam, 2)
    out = {}
    for n, (head, base) in ends.items():
        if n not in valleys:
            out[n] = (head, head + lam * RELATIVE_LENGTH[n] * s)
            continue
        fy, v = valleys[n]
        pred = head + lam * RELATIVE_LENGTH[n] * s
        sd = SCALE_TOLERANCE * (pred - head)
        near = np.abs(fy - pred) <= 1.5 * sd
        weighted = np.where(near, v * np.exp(-0.5 * ((fy - pred) / sd) ** 2), 0.0)
        # No clear joint line near the predicted base: trust the hand scale.
        out[n] = (head, float(fy[int(np.argmax(weighted))]) if weighted.max() > 0.25 else float(pred))
    return out


def _fine_for(image: np.ndarray, hand: _CanonicalHand, shafts: _Shafts, k: int, pixel_spacing_mm: float):
    """The full-resolution profile sampler (:func:`_fine_profile_sampler`) along shaft line ``k``."""
    a, b = shafts.lines[k]
    return _fine_profile_sampler(image, hand.frame, hand.factor, a, b, pixel_spacing_mm)


def _trace_ends(image: np.ndarray, pixel_spacing_mm: float, hand: _CanonicalHand, shafts: _Shafts,
                length_per_spacing: float) -> dict[str, tuple[float, float]]:
    """First-pass ends of II-V: name -> ``(head_y, base_y)`` in canonical pixels, for the bones
    whose shaft line is supported (support at least 0.5, finite RMS) and whose ends show
    (:func:`_ends_along`; ``length_per_spacing`` is the expected L(III) in s)."""
    s = hand.s
    ys = np.arange(0.0, hand.canon.shape[0] - 1.0, 0.5)
    # Wider top-hat for the joint spaces: the 0.7 s one flattens the broad metacarpal heads.
    bone_wide = _tophat(hand.canon, int(round(HEAD_TOPHAT * s)))
    out = {}
    for k, name in enumerate(NAMES):
        if shafts.support[k] < 0.5 or not np.isfinite(shafts.rms[k]):
            continue
        a, b = shafts.lines[k]
        prof = ndi.gaussian_filter1d(_along(bone_wide, a, b, ys, 1.0), 1.0)
        raw = ndi.gaussian_filter1d(_along(hand.canon, a, b, ys, HEAD_BAND * s), 1.0)
        rprof = ndi.gaussian_filter1d(_along(hand.ridge, a, b, ys, 1.0), 2.0)
        ends = _ends_along(ys, prof, raw, rprof, float(hand.fb[k, 0]), s, RELATIVE_LENGTH[name],
                           _fine_for(image, hand, shafts, k, pixel_spacing_mm), length_per_spacing)
        if ends is not None:
            out[name] = (ends[0], ends[1])
    return out


def _axis_of(hand: _CanonicalHand, shafts: _Shafts, name: str, head_y: float, base_y: float,
             pixel_spacing_mm: float) -> MetacarpalAxis:
    """The axis of bone ``name`` (II-V) between canonical ``head_y`` and ``base_y`` on its shaft
    line, in image pixels, its length in mm (``pixel_spacing_mm``), and a confidence from the
    line's support and RMS (1 = clean; RMS beyond 1 pixel costs e^-1 per 2 pixels)."""
    k = NAMES.index(name)
    a, b = shafts.lines[k]
    head_rc = hand.to_image_rc(head_y, a + b * head_y)
    base_rc = hand.to_image_rc(base_y, a + b * base_y)
    length_mm = float(np.hypot(head_rc[0] - base_rc[0], head_rc[1] - base_rc[1])) * pixel_spacing_mm
    conf = float(np.clip(shafts.support[k], 0, 1) * np.exp(-max(shafts.rms[k] - 1.0, 0.0) / 2.0))
    return MetacarpalAxis(name, base_rc, head_rc, length_mm, None, conf)


def _thumb_metacarpal(image, w: _Work, thumb: _Finger, s: float, lam: float, pixel_spacing_mm: float):
    """Axis of metacarpal I, traced like II-V in a frame aligned with the thumb (display only).

    ``image``: the full-resolution image (``pixel_spacing_mm`` mm); ``w``: the working copy;
    ``thumb``: the thumb finger (working pixels); ``s``: finger spacing (working pixels); ``lam``:
    L(III) in s. Returns a :class:`MetacarpalAxis` in image pixels, or None.
    """
    u = thumb.direction
    v = np.array([u[1], -u[0]])
    frame = _HandFrame(thumb.base_rc - 1.2 * s * u, u, v, (int(4.5 * s), int(2.5 * s)))
    canon = frame.sample(w.g)
    yb, xb = (float(q) for q in frame.from_work(np.array(thumb.base_rc[0]), np.array(thumb.base_rc[1])))
    bone = _tophat(canon, int(round(0.7 * s)))
    ridge = _ridge_x(bone, 0.25 * s, RIDGE_SIGMA * s)
    fit = _fit_shaft_lines(ridge, np.array([[yb, xb]]), np.array([[-1.0, 0.0]]), s, bone,
                           window=THUMB_WINDOW, seed_window=THUMB_SEED_WINDOW)
    if fit is None:
        return None
    lines, support, rms, _ = fit
    if support[0] < 0.5:
        return None
    a, b = lines[0]
    ys = np.arange(0.0, canon.shape[0] - 1.0, 0.5)
    prof = ndi.gaussian_filter1d(_along(_tophat(canon, int(round(HEAD_TOPHAT * s))), a, b, ys, 1.0), 1.0)
    raw = ndi.gaussian_filter1d(_along(canon, a, b, ys, HEAD_BAND * s), 1.0)
    rprof = ndi.gaussian_filter1d(_along(ridge, a, b, ys, 1.0), 2.0)

    fine = _fine_profile_sampler(image, frame, w.factor, a, b, pixel_spacing_mm)

    # The thumb's web is deep: its MCP joint lies about where the thumb leaves the palm.
    ends = _ends_along(ys, prof, raw, rprof, yb + THUMB_WEB_OFFSET * s, s, RELATIVE_LENGTH["I"], fine, lam)
    if ends is None:
        return None
    head_y, base_y = ends[0], ends[1]
    head_rc = _to_image_rc(frame, w.factor, head_y, a + b * head_y)
    base_rc = _to_image_rc(frame, w.factor, base_y, a + b * base_y)
    length_mm = float(np.hypot(head_rc[0] - base_rc[0], head_rc[1] - base_rc[1])) * pixel_spacing_mm
    return MetacarpalAxis("I", base_rc, head_rc, length_mm, None, float(np.clip(support[0], 0, 1)))
