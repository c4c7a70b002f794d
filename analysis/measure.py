"""Cortical thickness T and outer width W of one metacarpal, from many profiles across its shaft.

Method (constants below; see docs/method.md):

1. The region of interest (ROI) is centred at mid-shaft (half-way between base and head) and
   is ``ROI_FRACTION * L`` long along the axis given by ``analysis.locate``.
2. The axis is refined first: the median profile of each half of the ROI is fitted and the
   line through the two fitted bone centres becomes the measurement axis (a tilted axis would
   widen every profile by ``1/cos(tilt)``).
3. ``N_PROFILES`` profiles perpendicular to the refined axis, evenly spaced over the ROI, each
   the mean of the parallel lines between it and its neighbours (all ROI pixels are used once).
4. Each profile is fitted with the blurred projected hollow cylinder of ``analysis.kernels``
   (with the vendor's unsharp-mask edge enhancement in the model). First every
   ``SIGMA_SUBSET``-th profile with the blur sigma and the enhancement (k, m) free; their medians
   are this bone's detector blur and processing; then every profile with those fixed (fewer
   free parameters: lower variance, same bias). Amounts below ``MIN_UNSHARP_AMOUNT`` count as none.
   The subset is fitted grey linear in attenuation and, when its residuals look like a
   display curve's (``BEND_TRY_RATIO``), again with the display-curve bend (g, h) free; the
   bend is kept only when it lowers the median rms below ``BEND_MIN_RMS_RATIO`` of the linear
   fit. Profiles are fitted in units of the shaft's contrast (the bend's scale).
5. Profiles whose fit failed, whose rms residual exceeds ``RMS_LIMIT`` times the median, or
   whose T or W is more than ``MAD_LIMIT`` robust standard deviations (1.4826 * MAD, at least
   ``MAD_FLOOR_MM``) from the median are rejected. T is the mean over kept profiles of ``R - r`` (the mean of the two wall
   thicknesses ``R - r +/- e``), W the mean of ``2 R``.
   Before all this the axis is checked: over its middle 60 % every profile must show bone
   (peak >= ``GAP_RATIO`` x median), else ``bone_not_found`` (the axis crossed a joint).
6. quality = (kept / total) * clip(1 - relative_rms / RELATIVE_RMS_LIMIT, 0, 1), where
   relative_rms is the median rms residual over the bone's contrast. A bone is measured when
   quality >= ``QUALITY_MIN`` and at least ``MIN_PROFILES_USED`` profiles were kept; otherwise it
   is refused ``low_quality``. Profiles whose peak exceeds ``FOREIGN_PEAK_RATIO`` times the
   median peak of the middle 60 % of the shaft (metal, a cast) on more than
   ``FOREIGN_FRACTION`` of the ROI refuse it ``foreign_object_in_roi``. A straight line
   fitted to W along the ROI that changes by more than ``MAX_TAPER``, or widths spread about
   that line by more than ``MAX_FLARE`` (10th-90th percentile), both over the median W, mean
   the ROI is on a flaring end of the bone rather than the steadily tapering shaft (a
   misplaced axis): ``low_quality``.
   The blur sigma is held at ``MAX_BLUR_MM`` at most (a detector's blur, not the bone's).

Coordinates: ``(row, col)`` inside this module; the BoneResult geometry is ``(column, row)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from analysis import kernels
from analysis.result import REASON_MESSAGES, BoneResult

ROI_FRACTION = 0.25
"""ROI length along the axis, as a fraction of the bone length L (centred at mid-shaft)."""
N_PROFILES = 40
"""Profiles per bone (the issue asks for at least 30)."""
SIGMA_SUBSET = 4
MAD_LIMIT = 3.5
MAD_FLOOR_MM = 0.01
"""Floor of the robust SD (mm) in the outlier test: profiles within 3.5 x 0.01 mm of the median
are never outliers, however tightly the others agree."""
RMS_LIMIT = 3.0
RELATIVE_RMS_LIMIT = 0.25
QUALITY_MIN = 0.5
MIN_PROFILES_USED = 20
FOREIGN_FRACTION = 0.1
FOREIGN_PEAK_RATIO = 1.6
"""A profile whose peak above background exceeds this multiple of the shaft's median peak holds
foreign material (metal, a cast edge); bone itself varies far less along the shaft."""
MARGIN_MM = 1.5
"""Background on each side of the bone included in a profile (at least 6 blur sigmas)."""
GAP_RATIO = 0.35
"""Over the middle 60 % of the axis every profile's bone peak must reach this fraction of the median."""
MAX_ITER = 60
SUBSET_MAX_ITER = 25
"""The sigma/enhancement fits only feed medians; a few creep along the shallow sigma-k valley."""
UNSHARP_START = (0.3, 4.0)
"""Start of the edge-enhancement amount k and radius ratio m (see analysis.kernels)."""
MIN_UNSHARP_AMOUNT = 0.05
BEND_MIN_RMS_RATIO = 0.9
"""The display-curve bend (g, h of analysis.kernels) is kept only when it lowers the subset's
median rms residual below this fraction of the straight fit's. Phantoms: a gamma, S-curve,
equalised or exposure-linear display 0.3-0.66 of it, an edge-enhanced 8-bit one 0.77-0.86, an
image linear in attenuation 0.97 (the bend would only soak up the model's small mismatches)."""
BEND_TRY_RATIO = 0.985
"""The bend is fitted at all only when the straight subset fit's residuals, regressed on v^2 and
v^3 of its own bone signal (:func:`_bend_shows`), shrink below this fraction. Images linear in
attenuation: 0.990-1.000 (every linear stress-run phantom), where the bent fit never passed
BEND_MIN_RMS_RATIO; display curves 0.78-0.93 (phantoms); the real films whose bend was kept:
0.83-0.978. Saves the bent subset fit (about 5 ms a bone) where it cannot help."""
MAX_BLUR_MM = 0.2
"""Largest blur sigma (mm) taken as the detector's (CR/DX: about 0.05-0.2 mm; the phantom tests span the same). On real hands a
bone whose inner cortex fades gradually into the canal fits a wider blur with walls half as thick
(2T/W = 0.2 beside 0.5 on the other metacarpals); the blur is held here instead."""
CANAL_STARTS = (0.45, 0.6, 0.75)
"""Start values of the canal radius r / R for the median-profile fits."""
RUN_LEVEL = 0.35
"""Level (fraction of peak over background) that separates bone from soft tissue for start values;
below half maximum so that a medullary canal darker than half the cortex still counts as bone."""
CANAL_GAP_MM = 4.0
"""Dark stretches shorter than this inside a bone's half-maximum run are its medullary canal."""
MCI_RANGE = (0.15, 0.95)
"""Plausible 2T/W; outside it the canal or the walls were not resolved (osteoporotic hands reach ~0.3)."""
MAX_TAPER = 0.35
"""Largest change of W along the ROI of a straight line fitted to W(position), over the median W.
A real shaft tapers steadily by up to ~25 % over 0.2 L on the real hands (towards the head);
an ROI that slid onto the head or base flares by far more."""
MAX_FLARE = 0.08
"""Largest 10th-90th percentile spread of W about that straight line, over the median W: a
steady taper leaves a few per cent, the curving flare of a bone end more."""
SHAFT_WIDTH_MM = (3.0, 20.0)
"""Plausible outer width of a metacarpal shaft; a fit outside it means the axis missed the bone."""


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.hypot(v[0], v[1])


def _bone_refused(name: str, reason: str, message: str | None = None, **fields: Any) -> BoneResult:
    return BoneResult(name=name, status="refused", reason=reason,
                      message=message or REASON_MESSAGES.get(reason, reason), **fields)


def _bone_run(x: np.ndarray, y: np.ndarray, gap_px: float):
    """Background, peak and the (left, right) sample indices of the bone nearest the axis.

    The bone is the run of samples above ``RUN_LEVEL`` of the peak nearest ``x = 0``; runs separated by less
    than ``gap_px`` are joined first (a dark medullary canal can split a bone into its two
    cortices). None when there is no such run inside the window.
    """
    n = x.size
    k = max(3, n // 12)
    # The lower end: the other may reach a neighbouring bone or foreign material.
    bg = min(np.median(y[:k]), np.median(y[-k:]))
    ys = np.convolve(y, np.ones(3) / 3, mode="same")
    ys[0], ys[-1] = y[0], y[-1]
    centre = int(np.argmin(np.abs(x)))
    lo_i, hi_i = max(centre - n // 4, 1), min(centre + n // 4, n - 1)
    peak = ys[lo_i:hi_i].max()
    if not peak - bg > 0:
        return None
    above = ys > bg + RUN_LEVEL * (peak - bg)
    # Far brighter than the bone (metal or a cast over a neighbour) is no part of it, nor is
    # the run that holds it (its blurred edge): were they kept, the canal closing below would
    # join them to the bone up to the window's edge.
    foreign = ys > bg + FOREIGN_PEAK_RATIO * (peak - bg)
    if foreign.any():
        labels, _ = ndimage.label(above)
        above &= ~np.isin(labels, np.unique(labels[foreign]))
    gap = int(round(gap_px))
    if gap >= 1:
        above = ndimage.binary_closing(above, structure=np.ones(gap + 1, dtype=bool)) | above
    if not above[lo_i:hi_i].any():
        return None
    idx = np.flatnonzero(above)
    start = idx[np.argmin(np.abs(x[idx]))]
    left = start
    while left > 0 and above[left - 1]:
        left -= 1
    right = start
    while right < n - 1 and above[right + 1]:
        right += 1
    if left == 0 or right == n - 1 or right - left < 4:
        return None
    return bg, peak, left, right


def _initial_params(x: np.ndarray, y: np.ndarray, gap_px: float = 0.0) -> np.ndarray | None:
    """Rough start for the profile fit from the half-maximum crossings of the bone."""
    run = _bone_run(x, y, gap_px)
    if run is None:
        return None
    bg, peak, left, right = run
    c = 0.5 * (x[left] + x[right])
    big_r = 0.5 * (x[right] - x[left])
    small_r = 0.55 * big_r
    chord_peak = 2.0 * math.sqrt(big_r**2 - small_r**2)
    a1 = (peak - bg) / chord_peak * 1.2
    a2 = 0.8 * a1
    sigma = max(1.0, 0.02 * big_r)
    return np.array([c, big_r, small_r, 0.0, sigma, bg, 0.0, a1, a2, UNSHARP_START[0], UNSHARP_START[1], 0.0, 0.0])


def _width_taper(pos_px: np.ndarray, width_px: np.ndarray, roi_len_px: float) -> tuple[float, float]:
    """Linear taper and flare of the outer width along the ROI, both relative to the median width.

    A real shaft tapers steadily (narrowest near the proximal third, widening towards the head),
    so its width is close to a straight line in the position along the axis; an ROI that slid
    onto a flaring end widens faster and faster. ``taper`` is the change of the fitted line over
    the ROI length; ``flare`` the 10th-90th percentile spread of the widths about that line.

    Parameters
    ----------
    pos_px : (n,) positions of the kept profiles along the axis (px, ROI centre 0).
    width_px : (n,) fitted outer widths 2R (px).
    roi_len_px : ROI length (px).
    """
    median = max(float(np.median(width_px)), 1e-9)
    if pos_px.size < 3:
        return 0.0, 0.0
    slope, icept = np.polyfit(pos_px, width_px, 1)
    resid = width_px - (slope * pos_px + icept)
    taper = abs(float(slope)) * roi_len_px / median
    flare = float(np.percentile(resid, 90) - np.percentile(resid, 10)) / median
    return taper, flare


def _fit_median_profile(image, centers, normal, tangent, offsets, n_lines, step, spacing_mm, grey_scale=1.0):
    prof = kernels.sample_profiles(image, centers, normal, tangent, offsets, n_lines, step) / grey_scale
    prof = prof[~np.isnan(prof).any(axis=1)]
    if prof.shape[0] < 2:
        return None
    med = np.median(prof, axis=0)
    p0 = _initial_params(offsets, med, CANAL_GAP_MM / spacing_mm)
    if p0 is None:
        return None
    # Fit the bone and its margin only, as the final profiles do: the wide search window can
    # reach a neighbour's metal or cast, which no linear background absorbs.
    inside = np.abs(offsets - p0[0]) <= p0[1] + max(MARGIN_MM / spacing_mm, 6.0 * p0[4], 8.0)
    if inside.sum() < offsets.size:
        offsets, med = np.ascontiguousarray(offsets[inside]), np.ascontiguousarray(med[inside])
    # Several starts for the canal radius: processed images can hold a false minimum with a
    # thin wall and a wide blur. The lowest residual wins; the starts are fitted without the
    # edge-enhancement terms (half the cost), the winner is then refined with them.
    plain = np.ones(kernels.N_PARAMS, dtype=np.bool_)
    plain[9] = plain[10] = plain[11] = plain[12] = False
    best = None
    for canal in CANAL_STARTS:
        start = p0.copy()
        start[2] = canal * p0[1]
        start[9] = 0.0
        p, rms, _, status = kernels.fit_one_profile(offsets, med, start, plain, MAX_ITER, kernels._GL_X, kernels._GL_W)
        if status != kernels.FIT_BAD_INPUT and np.isfinite(rms) and (best is None or rms < best[1]):
            best = (p, rms)
    if best is None:
        return None
    start = best[0].copy()
    start[9], start[10] = p0[9], p0[10]
    free = np.ones(kernels.N_PARAMS, dtype=np.bool_)
    p, rms, _, status = kernels.fit_one_profile(offsets, med, start, free, SUBSET_MAX_ITER, kernels._GL_X,
                                                kernels._GL_W)
    if status == kernels.FIT_BAD_INPUT or not np.isfinite(rms) or rms > best[1]:
        p = best[0]
    # A metacarpal shaft: 3..20 mm wide, crossed by the given axis, edges sharper than its walls.
    radius_mm = p[1] * spacing_mm
    if not (SHAFT_WIDTH_MM[0] / 2 <= radius_mm <= SHAFT_WIDTH_MM[1] / 2) or abs(p[0]) > p[1] or p[4] > 0.25 * p[1]:
        return None
    return p


def _processing(offsets, profiles, p0, free, sigma0, sigma_max):
    """The detector blur, edge enhancement and display bend of one bone from a subset of its
    profiles: ``(sigma, amount, ratio, bend (g, h), median rms, fitted (n, N_PARAMS))``, the
    medians of their fits with ``free`` parameters (sigma held at ``sigma_max`` px when wider,
    see MAX_BLUR_MM), and the fits themselves."""
    p_sub, rms, _, st = kernels.fit_profiles(offsets, profiles, p0, free, SUBSET_MAX_ITER)
    good = (st != kernels.FIT_BAD_INPUT) & np.isfinite(rms)
    if not good.any():
        return sigma0, p0[0, 9], p0[0, 10], p0[0, 11:13].copy(), np.inf, p_sub
    sigma = float(np.median(p_sub[good, 4]))
    if sigma > sigma_max:
        # Wider than any detector blur: the fit is blurring a gradual (trabecularised) inner
        # cortex away and thinning the walls to match. Hold the blur at the detector's limit
        # and fit the enhancement again with it.
        held = p0.copy()
        held[:, 4] = sigma = sigma_max
        free_held = free.copy()
        free_held[4] = False
        p_held, rms_held, _, st = kernels.fit_profiles(offsets, profiles, held, free_held, SUBSET_MAX_ITER)
        good_held = (st != kernels.FIT_BAD_INPUT) & np.isfinite(rms_held)
        if good_held.any():
            p_sub, rms, good = p_held, rms_held, good_held
    return (sigma, float(np.median(p_sub[good, 9])), float(np.median(p_sub[good, 10])),
            np.median(p_sub[good, 11:13], axis=0), float(np.median(rms[good])), p_sub)


def _bend_shows(offsets: np.ndarray, profiles: np.ndarray, fitted: np.ndarray) -> float:
    """How much of the straight fit's misfit a display bend could take: the median over
    ``profiles`` (n, m) of rms(residual after regressing it on v^2, v^3, 1, x) / rms(residual),
    where v is each profile's bone signal from its straight fit ``fitted`` (n, N_PARAMS)
    (offsets in px). 1 means nothing to gain; a linear regression, no fit."""
    ratios = []
    for y, p in zip(profiles, fitted):
        if not np.isfinite(y).all() or not np.isfinite(p).all():
            continue
        f, _ = kernels.profile_model(offsets, p, kernels._GL_X, kernels._GL_W, bool(p[9] != 0.0))
        v = f - p[5] - p[6] * offsets
        residual = y - f
        design = np.stack([v * v, v * v * v, np.ones_like(v), offsets], axis=1)
        coef = np.linalg.lstsq(design, residual, rcond=None)[0]
        before = math.sqrt(float(np.mean(residual**2)))
        after = math.sqrt(float(np.mean((residual - design @ coef) ** 2)))
        ratios.append(after / before if before > 0 else 1.0)
    return float(np.median(ratios)) if ratios else 1.0


def measure_bone(image_bone_bright: np.ndarray, axis: Any, pixel_spacing_mm: float, name: str) -> BoneResult:
    """Measure cortical thickness T and outer width W of one metacarpal.

    Parameters
    ----------
    image_bone_bright : float64 (rows, cols)
        The radiograph with bone bright (any linear scale; a smooth display curve over the bone is modelled).
    axis : MetacarpalAxis
        ``.base_rc`` and ``.head_rc`` as ``(row, col)`` pixels, ``.length_mm`` (base to head).
    pixel_spacing_mm : float
        Pixel size (mm), square pixels.
    name : str
        ``II``, ``III`` or ``IV``.

    Returns
    -------
    BoneResult
        ``status == "ok"`` with T, W, L (mm) and geometry in ``(column, row)`` pixels, or
        ``refused`` with ``low_quality``, ``bone_not_found`` or ``foreign_object_in_roi``.
    """
    image = np.ascontiguousarray(image_bone_bright, dtype=np.float64)
    base = np.asarray(axis.base_rc, dtype=np.float64)
    head = np.asarray(axis.head_rc, dtype=np.float64)
    length_px = float(np.hypot(*(head - base)))
    length_mm = float(axis.length_mm) if getattr(axis, "length_mm", None) else length_px * pixel_spacing_mm
    axis_px = [(float(base[1]), float(base[0])), (float(head[1]), float(head[0]))]
    if length_px < 20:
        return _bone_refused(name, "bone_not_found", length_mm=length_mm, axis_px=axis_px)
    tangent = _unit(head - base)
    normal = np.array([-tangent[1], tangent[0]])
    mid = 0.5 * (base + head)
    roi_len = ROI_FRACTION * length_px
    # Search window for the first look: a metacarpal is about 0.12 L wide.
    # (not less than 7 mm nor more than 10 mm: the axis length from the hand finder may be off).
    half0 = min(max(0.13 * length_px, 7.0 / pixel_spacing_mm), 10.0 / pixel_spacing_mm)
    offsets0 = np.arange(-math.floor(half0), math.floor(half0) + 1, 1.0)

    # 0. Foreign material: profile peaks far above the shaft's typical peak. The typical peak
    # comes from the whole middle 60 % of the bone so that metal over the ROI cannot set it.
    shaft_pos = np.linspace(-0.3, 0.3, 25) * length_px
    shaft_centers = mid[None, :] + shaft_pos[:, None] * tangent[None, :]
    shaft = kernels.sample_profiles(image, shaft_centers, normal, tangent, offsets0, 9, 1.0)
    keep = ~np.isnan(shaft).any(axis=1)
    shaft = shaft[keep]
    if shaft.shape[0]:
        # Peaks of noisy profiles: smooth over 5 samples first (the bone is 30+ samples wide).
        shaft = ndimage.uniform_filter1d(shaft, 5, axis=1, mode="nearest")
    peak_limit = np.inf
    grey_scale = 1.0  # profiles are fitted in units of the shaft's contrast (the bend terms' scale)
    if shaft.shape[0] >= 5:
        k = max(3, shaft.shape[1] // 12)
        background = np.minimum(np.median(shaft[:, :k], axis=1), np.median(shaft[:, -k:], axis=1))
        peaks = shaft.max(axis=1) - background
        peak_limit = FOREIGN_PEAK_RATIO * float(np.median(peaks))
        grey_scale = max(float(np.median(peaks)), 1e-12)
        # A correct axis runs along one bone over its whole middle: a joint space (or the end
        # of the bone) there means the axis slid along the finger. The gap is judged against
        # the soft tissue of the whole shaft, not of each profile: near the base the
        # neighbouring metacarpals and carpals fill a profile's sides and would raise its own
        # background to the bone's level although no joint lies on the axis.
        soft_tissue = float(np.median(background))
        axis_peaks = shaft.max(axis=1) - soft_tissue
        if np.any(axis_peaks < GAP_RATIO * float(np.median(axis_peaks))):
            return _bone_refused(
                name, "bone_not_found",
                f"The axis found for metacarpal {name} does not run along a single bone "
                "(a joint space lies in its middle).", length_mm=length_mm, axis_px=axis_px)


    # 1. Refine the axis from the two halves of the ROI.
    quarter = roi_len / 4
    n_half = 8
    fits = []
    for sign in (-1.0, 1.0):
        centre = mid + sign * quarter * tangent
        pos = (np.arange(n_half) + 0.5) / n_half * (roi_len / 2) - roi_len / 4
        centers = centre[None, :] + pos[:, None] * tangent[None, :]
        pitch = roi_len / 2 / n_half
        n_lines = max(1, int(round(pitch)))
        p = _fit_median_profile(image, centers, normal, tangent, offsets0, n_lines, pitch / n_lines, pixel_spacing_mm,
                                grey_scale)
        fits.append(p)
    if fits[0] is None or fits[1] is None:
        return _bone_refused(name, "bone_not_found", "No bone shaft was found along this metacarpal's axis.",
                             length_mm=length_mm, axis_px=axis_px)
    c_lo, c_hi = fits[0][0], fits[1][0]
    p_start = 0.5 * (fits[0] + fits[1])
    mid = mid + 0.5 * (c_lo + c_hi) * normal
    tangent = _unit(2 * quarter * tangent + (c_hi - c_lo) * normal)
    normal = np.array([-tangent[1], tangent[0]])
    p_start[0] = 0.0
    p_start[3] = 0.0

    # 2. Profiles along the refined axis.
    big_r = p_start[1]
    sigma0 = p_start[4]
    margin = max(MARGIN_MM / pixel_spacing_mm, 6.0 * sigma0, 8.0)
    half = min(big_r + margin, half0 * 1.5)
    offsets = np.arange(-math.ceil(half), math.ceil(half) + 1, 1.0)
    pos = (np.arange(N_PROFILES) + 0.5) / N_PROFILES * roi_len - roi_len / 2
    centers = mid[None, :] + pos[:, None] * tangent[None, :]
    pitch = roi_len / N_PROFILES
    n_lines = max(1, int(round(pitch)))
    profiles = kernels.sample_profiles(image, centers, normal, tangent, offsets, n_lines, pitch / n_lines) / grey_scale

    roi_polygon = [
        tuple(float(v) for v in (pt[1], pt[0]))
        for pt in (
            mid - roi_len / 2 * tangent - half * normal,
            mid + roi_len / 2 * tangent - half * normal,
            mid + roi_len / 2 * tangent + half * normal,
            mid - roi_len / 2 * tangent + half * normal,
        )
    ]
    common = dict(length_mm=length_mm, roi_center_px=(float(mid[1]), float(mid[0])),
                  roi_polygon_px=roi_polygon, axis_px=axis_px, profiles_total=N_PROFILES)

    if np.isnan(profiles).any(axis=1).sum() > N_PROFILES // 4:
        return _bone_refused(name, "bone_not_found", **common)

    # 3. Foreign material in the ROI profiles.
    contrast = p_start[7] * 2.0 * math.sqrt(max(p_start[1] ** 2 - p_start[2] ** 2, 1e-9))
    finite = ~np.isnan(profiles).any(axis=1)
    foreign = np.zeros(N_PROFILES, dtype=bool)
    if finite.any():
        k = max(3, profiles.shape[1] // 12)
        bg = 0.5 * (np.median(profiles[finite, :k], axis=1) + np.median(profiles[finite, -k:], axis=1))
        smooth = ndimage.uniform_filter1d(profiles[finite], 5, axis=1, mode="nearest")
        foreign[finite] = smooth.max(axis=1) - bg > peak_limit / grey_scale  # profiles are in grey_scale units
    if foreign.mean() > FOREIGN_FRACTION:
        return _bone_refused(name, "foreign_object_in_roi", **common)

    # 4. Fits: sigma free on a subset, then fixed for all.
    p0 = np.tile(p_start, (N_PROFILES, 1))
    free = np.ones(kernels.N_PARAMS, dtype=np.bool_)
    if p_start[9] < MIN_UNSHARP_AMOUNT:
        # The median profiles show no edge enhancement: fit without it (half the cost).
        p0[:, 9] = 0.0
        free[9] = free[10] = False
    sub = np.arange(0, N_PROFILES, SIGMA_SUBSET)
    sigma_max = max(MAX_BLUR_MM / pixel_spacing_mm, 1.5 * kernels.MIN_SIGMA_PX)
    # Grey linear in attenuation first; the display-curve bend only when it fits the subset
    # clearly better (on a linear image it would soak up the model's small mismatches).
    straight = free.copy()
    straight[11] = straight[12] = False
    p0_straight = p0.copy()
    p0_straight[:, 11:13] = 0.0
    sigma, amount, ratio, bend, rms_straight, fitted = _processing(offsets, profiles[sub], p0_straight[sub],
                                                                    straight, sigma0, sigma_max)
    if _bend_shows(offsets, profiles[sub], fitted) < BEND_TRY_RATIO:
        bent = _processing(offsets, profiles[sub], p0[sub], free, sigma0, sigma_max)
        if bent[4] < BEND_MIN_RMS_RATIO * rms_straight:
            sigma, amount, ratio, bend = bent[:4]
    if amount < MIN_UNSHARP_AMOUNT:
        amount = 0.0  # no measurable enhancement: the cheaper exact model without it
    p0[:, 4], p0[:, 9], p0[:, 10] = sigma, amount, ratio
    p0[:, 11:13] = bend
    free[4] = free[9] = free[10] = free[11] = free[12] = False
    params, rms, _, status = kernels.fit_profiles(offsets, profiles, p0, free, MAX_ITER)

    ok = (status != kernels.FIT_BAD_INPUT) & np.isfinite(rms) & ~foreign
    thickness = params[:, 1] - params[:, 2]
    width = 2.0 * params[:, 1]
    if ok.sum() >= 3:
        ok &= rms <= RMS_LIMIT * np.median(rms[ok])
        for values in (thickness, width):
            med = np.median(values[ok])
            mad = max(1.4826 * np.median(np.abs(values[ok] - med)), MAD_FLOOR_MM / pixel_spacing_mm)
            ok &= np.abs(values - med) <= MAD_LIMIT * mad
    used = int(ok.sum())
    if used == 0:
        return _bone_refused(name, "low_quality", profiles_used=0, quality=0.0, **common)

    # A cortex thinner than MCI_RANGE allows is a fit that did not resolve the canal.
    mci_est = 2.0 * float(np.mean(thickness[ok])) / max(float(np.mean(width[ok])), 1e-9)
    if not MCI_RANGE[0] <= mci_est <= MCI_RANGE[1]:
        return _bone_refused(
            name, "low_quality",
            f"The cortex of metacarpal {name} could not be resolved (2T/W = {mci_est:.2f} is implausible).",
            profiles_used=used, quality=0.0, **common)

    # The ROI must lie on the straight part of the shaft: near the head or base the width flares.
    taper, flare = _width_taper(pos[ok], width[ok], roi_len)
    if taper > MAX_TAPER or flare > MAX_FLARE:
        return _bone_refused(
            name, "low_quality",
            f"The measurement region of metacarpal {name} is not on the straight part of the shaft "
            f"(its width changes by {100 * taper:.0f} % along it, {100 * flare:.0f} % off a straight taper).",
            profiles_used=used, quality=0.0, **common)

    # Residual tilt of the bone against the refined axis (centres drift along the ROI).
    slope = np.polyfit(pos[ok], params[ok, 0], 1)[0] if used >= 3 else 0.0
    cos_tilt = 1.0 / math.sqrt(1.0 + slope * slope)
    t_mm = float(np.mean(thickness[ok])) * cos_tilt * pixel_spacing_mm
    w_mm = float(np.mean(width[ok])) * cos_tilt * pixel_spacing_mm
    relative_rms = float(np.median(rms[ok])) / max(contrast, 1e-12)
    quality = used / N_PROFILES * min(max(1.0 - relative_rms / RELATIVE_RMS_LIMIT, 0.0), 1.0)

    edges: dict[str, list[tuple[float, float]]] = {"outer_a": [], "inner_a": [], "inner_b": [], "outer_b": []}
    for i in np.flatnonzero(ok):
        c, rr_out, rr_in, e = params[i, 0], params[i, 1], params[i, 2], params[i, 3]
        for key, off in (("outer_a", c - rr_out), ("inner_a", c + e - rr_in),
                         ("inner_b", c + e + rr_in), ("outer_b", c + rr_out)):
            pt = centers[i] + off * normal
            edges[key].append((float(pt[1]), float(pt[0])))

    result = BoneResult(
        name=name, cortical_thickness_mm=t_mm, outer_width_mm=w_mm, profiles_used=used,
        quality=float(quality), edges_px=edges, **common,
    )
    if quality < QUALITY_MIN or used < MIN_PROFILES_USED:
        # A refused bone carries no numbers: nothing downstream may mistake them for a result.
        result.status = "refused"
        result.reason = "low_quality"
        result.message = REASON_MESSAGES["low_quality"]
        result.cortical_thickness_mm = result.outer_width_mm = None
    return result
