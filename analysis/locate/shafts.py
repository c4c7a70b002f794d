"""Stage 4: straight lines along the shafts of metacarpals II-V in the canonical frame.

Takes the canonical hand (:class:`analysis.locate.frame._CanonicalHand`: ridge and bone images,
finger bases and directions, finger spacing ``s``); gives one line ``x = a + b*y`` per bone in
canonical pixels (working pixels, about 0.5 mm), with the share of palm rows that supported it
and its RMS residual (pixels). Lines are seeded where each finger points, fitted to the peaks of
the ridge filter, and re-centred on the bone signal (the ridge of a hollow tube can lock onto
one cortex).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.locate.frame import _CanonicalHand
from analysis.locate.ridges import _peaks_1d, _row_peaks

SEED_PEAK_MIN = 0.25
"""Ridge peaks weaker than this fraction of the strongest do not seed a shaft line."""
CENTRE_HALF_WIDTH = 0.35
"""Half-width (in s) of the window in which a shaft line is re-centred on the bone signal."""
NAMES = ("II", "III", "IV", "V")
"""The bones whose shafts are fitted, from the thumb side (canonical +x first)."""


def _fit_shaft_lines(ridge: np.ndarray, finger_bases: np.ndarray, finger_dirs: np.ndarray, s: float,
                     bone_for_centre: np.ndarray | None = None, window=(1.2, 3.0), seed_window=(1.4, 2.2)):
    """Straight lines along the shafts of metacarpals II-V (canonical frame).

    Parameters
    ----------
    ridge : ndarray
        Ridge strength in the canonical frame (pixels).
    finger_bases, finger_dirs : ndarray (n, 2)
        Where each finger leaves the palm, canonical ``(y, x)``, and its unit direction.
    s : float
        Finger spacing (canonical pixels); ``window`` and ``seed_window`` (in s, proximal to the
        median finger base ``y_web``) are the palm rows fitted and those that seed the lines.
    bone_for_centre : ndarray, optional
        Bone signal the lines are re-centred on (default: ``ridge``).

    Returns
    -------
    ``(lines, support, rms, rows)`` or None when the palm band is under 5 rows: ``lines``
    ``(n, 2)`` of ``(a, b)`` with ``x = a + b*y``; ``support`` the share of rows whose ridge peak
    fitted each line (0..1); ``rms`` the residual (pixels, inf when unfitted); ``rows`` the palm
    rows fitted (canonical y).
    Ridge peaks on every row of the band are assigned to the nearest predicted line (first the
    finger's own direction carried on proximally), then each line is refitted by least squares;
    three rounds.
    """
    h, w = ridge.shape
    y_web = float(np.median(finger_bases[:, 0]))
    y0 = int(max(1, y_web + window[0] * s))
    y1 = int(min(h - 2, y_web + window[1] * s))
    rows = np.arange(y0, y1 + 1)
    if rows.size < 5:
        return None
    # Ridge peaks of every row at once: (n_rows, max peaks per row), +inf where a row has fewer.
    peaks_x = _row_peaks(ridge[rows], 0.1)
    lines = _seed_lines(ridge, finger_bases, finger_dirs, s, y_web, seed_window)
    support, rms = _refit_lines(lines, rows, peaks_x, s)
    _recentre_lines(lines, support, rows, bone_for_centre if bone_for_centre is not None else ridge, s, w)
    return lines, support, rms, rows


def _seed_lines(ridge: np.ndarray, finger_bases: np.ndarray, finger_dirs: np.ndarray, s: float, y_web: float,
                seed_window: tuple[float, float]) -> np.ndarray:
    """First lines ``(a, b)`` (canonical pixels): each finger's direction, halved (metacarpals fan
    less than fingers), carried proximally to a peak of the ridge averaged over ``seed_window``
    (in s, proximal to ``y_web``); fingers and peaks matched in order (II has the largest x)."""
    h = ridge.shape[0]
    yc0, yc1 = int(max(1, y_web + seed_window[0] * s)), int(min(h - 2, y_web + seed_window[1] * s))
    mean_prof = ridge[yc0 : yc1 + 1].mean(axis=0)
    yc = 0.5 * (yc0 + yc1)
    pk = _peaks_1d(mean_prof, SEED_PEAK_MIN * max(mean_prof.max(), 1e-9))
    pk = pk[np.argsort(-pk)]
    slopes, preds = [], []
    for (yb, xb), (dy, dx) in zip(finger_bases, finger_dirs):
        slope = dx / dy if abs(dy) > 1e-6 else 0.0
        b = 0.5 * slope  # metacarpals fan less than fingers
        slopes.append(b)
        preds.append(xb + b * (yc - yb))
    chosen = _match_in_order(np.array(preds), pk.astype(float), 0.8 * s)
    return np.array([[x - b * yc, b] for x, b in zip(chosen, slopes)], float)


def _refit_lines(lines: np.ndarray, rows: np.ndarray, peaks_x: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Refit ``lines`` (in place) to the row peaks ``peaks_x`` (``(len(rows), k)`` columns, +inf
    padded), three rounds with tolerance 0.35 s then 0.2 s. Returns ``(support, rms)`` per line:
    the share of rows used (0..1) and the residual (pixels; inf when under 30 % of rows fitted)."""
    support = np.zeros(len(lines))
    rms = np.full(len(lines), np.inf)
    has_peak = np.isfinite(peaks_x[:, 0]) if peaks_x.shape[1] else np.zeros(rows.size, bool)
    n_lines = len(lines)
    for it in range(3):
        tol = (0.35 if it == 0 else 0.2) * s
        # Per row and line: the nearest peak (the first of equals), kept when it lies within tol
        # and nearer this line than any other line.
        xl = lines[None, :, 0] + lines[None, :, 1] * rows[:, None]  # (n_rows, n_lines)
        nearest = np.zeros((rows.size, n_lines), int)
        if peaks_x.shape[1]:
            nearest = np.argmin(np.abs(peaks_x[:, None, :] - xl[:, :, None]), axis=2)
        pk = np.take_along_axis(peaks_x, nearest, axis=1) if peaks_x.shape[1] else np.full(xl.shape, np.inf)
        d = np.abs(pk - xl)
        to_others = np.abs(xl[:, None, :] - pk[:, :, None])  # [row, line k, other line]
        to_others[:, np.arange(n_lines), np.arange(n_lines)] = np.inf
        keep = has_peak[:, None] & (d < tol) & (to_others.min(axis=2) > d)
        for k in range(n_lines):
            sel = keep[:, k]
            n_pts = int(np.count_nonzero(sel))
            support[k] = n_pts / rows.size
            if n_pts < 0.3 * rows.size:
                continue
            py, px = rows[sel].astype(float), pk[sel, k]
            coef = np.polyfit(py, px, 1)
            lines[k] = [coef[1], coef[0]]
            rms[k] = float(np.sqrt(np.mean((px - np.polyval(coef, py)) ** 2)))
    return support, rms


def _recentre_lines(lines: np.ndarray, support: np.ndarray, rows: np.ndarray, src: np.ndarray, s: float,
                    w: int) -> None:
    """Move each supported line (in place) onto the centroid of the bone signal ``src`` within
    +-CENTRE_HALF_WIDTH s of it, row by row (``w``: image width, pixels). A ridge filter can lock
    onto one cortex of a hollow shaft; the centroid of the bone signal across the shaft cannot."""
    for k in range(len(lines)):
        if support[k] < 0.3:
            continue
        a, b = lines[k]
        half = CENTRE_HALF_WIDTH * s
        # Centroid of the bone signal (above its minimum) in a window around the line, per row.
        xc = a + b * rows
        lo = np.maximum(0, np.floor(xc - half)).astype(int)
        hi = np.minimum(w - 1, np.ceil(xc + half)).astype(int)
        span = int(max(np.max(hi - lo) + 1, 1))
        offs = np.arange(span)
        cols = lo[:, None] + offs[None, :]
        inside = cols <= hi[:, None]
        seg = src[rows[:, None], np.clip(cols, 0, w - 1)]
        floor_ = np.where(inside, seg, np.inf).min(axis=1)
        seg = np.where(inside, seg - floor_[:, None], 0.0)
        total = seg.sum(axis=1)
        ok = (hi >= lo) & (total > 0)
        if np.count_nonzero(ok) >= 5:
            xs_c = lo[ok] + (seg[ok] @ offs) / total[ok]
            coef = np.polyfit(rows[ok].astype(float), xs_c, 1)
            lines[k] = [coef[1], coef[0]]


def _match_in_order(preds: np.ndarray, peaks: np.ndarray, max_dist: float) -> np.ndarray:
    """Pick one peak per prediction, keeping the order (both sorted descending), minimising the
    total distance; a prediction with no peak within ``max_dist`` keeps its own position."""
    n, m = len(preds), len(peaks)
    out = preds.astype(float).copy()
    if m == 0:
        return out
    big = 1e9
    cost = np.full((n + 1, m + 1), big)
    cost[0, :] = 0.0
    choice = np.zeros((n + 1, m + 1), int)  # 1 = prediction i-1 took peak j-1
    for i in range(1, n + 1):
        cost[i, 0] = cost[i - 1, 0] + max_dist  # unmatched prediction
        for j in range(1, m + 1):
            skip = cost[i, j - 1]
            d = abs(preds[i - 1] - peaks[j - 1])
            take = cost[i - 1, j - 1] + (d if d < max_dist else big)
            unmatched = cost[i - 1, j] + max_dist
            best = min(skip, take, unmatched)
            cost[i, j] = best
            choice[i, j] = 0 if best == skip else (1 if best == take else 2)
    i, j = n, m
    while i > 0 and j > 0:
        c = choice[i, j]
        if c == 0:
            j -= 1
        elif c == 1:
            out[i - 1] = peaks[j - 1]
            i -= 1
            j -= 1
        else:
            i -= 1
    return out


@dataclass
class _Shafts:
    """The shaft lines of II-V (:data:`NAMES` order) in the canonical frame."""

    lines: np.ndarray
    """``(4, 2)``: ``(a, b)`` of ``x = a + b*y``, canonical pixels."""
    support: np.ndarray
    """Share of the palm rows whose ridge peak fitted each line (0..1)."""
    rms: np.ndarray
    """Residual of each fit (canonical pixels; inf when not fitted)."""
    gaps: np.ndarray
    """Distance between neighbouring lines (II-III, III-IV, IV-V) at mid-palm, in s."""
    rows: np.ndarray | None = None
    """The palm rows the lines were fitted on (canonical y)."""


def _fit_shafts(hand: _CanonicalHand, details: dict) -> _Shafts | None:
    """Stage 4: the shaft lines of II-V in ``hand``'s canonical frame, or None when the palm is too
    short to fit them. The gaps are measured 1.6 s proximal to the median finger base. Records
    ``shaft_support``, ``shaft_rms_px`` and ``shaft_gaps_spacing`` (in s) in ``details``."""
    fit = _fit_shaft_lines(hand.ridge, hand.fb, hand.fd, hand.s, hand.bone)
    if fit is None:
        return None
    return _with_gaps(hand, *fit, details)


def _centred_once_more(hand: _CanonicalHand, shafts: _Shafts, details: dict) -> _Shafts:
    """``shafts`` with their lines re-centred on ``hand.bone`` once more, the pass starting where
    :func:`_fit_shafts`'s ended (support and residuals are the fit's); details as there."""
    lines = shafts.lines.copy()
    _recentre_lines(lines, shafts.support, shafts.rows, hand.bone, hand.s, hand.bone.shape[1])
    return _with_gaps(hand, lines, shafts.support, shafts.rms, shafts.rows, details)


def _with_gaps(hand: _CanonicalHand, lines: np.ndarray, support: np.ndarray, rms: np.ndarray, rows: np.ndarray,
               details: dict) -> _Shafts:
    """The :class:`_Shafts` of fitted ``lines``, their gaps measured and recorded in ``details``."""
    details["shaft_support"] = [round(float(x), 2) for x in support]
    details["shaft_rms_px"] = [round(float(x), 2) if np.isfinite(x) else None for x in rms]
    y_mid = float(np.median(hand.fb[:, 0]) + 1.6 * hand.s)
    xs_mid = lines[:, 0] + lines[:, 1] * y_mid
    gaps = (xs_mid[:-1] - xs_mid[1:]) / hand.s
    details["shaft_gaps_spacing"] = [round(float(x), 2) for x in gaps]
    return _Shafts(lines, support, rms, gaps, rows)
