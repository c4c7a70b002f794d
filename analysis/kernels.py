"""Numba kernels for radiogrammetry, each with the plain-numpy reference the tests compare it to.

Two hot loops live here:

* :func:`sample_profiles` - bilinear intensity profiles along lines perpendicular to a bone
  axis, each averaged over a few parallel lines (a "thick" profile).
* :func:`fit_profiles` - a Levenberg-Marquardt fit, per profile, of the projected hollow
  cylinder blurred by a Gaussian point-spread function.

The profile model (all lengths in pixels along the profile, ``x = 0`` on the given axis)::

    f(x) = b0 + b1*x + v(x) + g*v(x)^2 + h*v(x)^3,   v(x) = A1*U(x - c; R) - A2*U(x - c - e; r)
    U(y; R) = (1 + k)*B(y; R, s) - k*B(y; R, s*sqrt(1 + m^2))

    B(y; R, s) = integral 2*sqrt(R^2 - t^2) * G_s(y - t) dt   (chord of a disc, blurred)

``c`` is the bone centre, ``R`` the periosteal (outer) radius, ``r`` the endosteal (inner)
radius, ``e`` the offset of the medullary canal (walls of unequal thickness), ``s`` the
Gaussian blur sigma, ``b0 + b1*x`` the soft-tissue background, ``A1`` the cortical
attenuation and ``A2`` the cortex-minus-marrow attenuation. ``U`` is the vendor's edge
enhancement (unsharp mask ``image + k*(image - G_w * image)`` with ``w = m*s``): a Gaussian
blur of a blurred disc is a blurred disc with the variances added, so the enhanced profile
stays analytic; the linear background is unchanged by it. ``k = 0`` is an unprocessed image.
``g`` and ``h`` bend the bone signal ``v`` as a display curve does (gamma, film-like S-curve, a
raw signal linear in exposure instead of attenuation): the second- and third-order terms of any
smooth monotone curve over the bone's grey range (an S-curve centred on the bone is mostly
third-order); ``g = h = 0`` is grey linear in attenuation. Their scale is that of ``v``: fit
profiles normalised to a contrast of about 1. Walls: ``R - r + e`` on the low-x
side and ``R - r - e`` on the high-x side; their mean is ``R - r``.

``B`` and its derivatives are evaluated by quadrature. Where the Gaussian window ``|y - t| <= 6 s``
lies inside the disc the chord is smooth and ``N_HERMITE`` Gauss-Hermite nodes in ``t`` are exact
to ~1e-8. Near one edge the integral is taken over ``t = +-R*(1 - u^2)`` (which removes the
square-root singularity with one sqrt per node; ``t = R*sin(theta)`` when the window holds both
edges) with ``N_QUADRATURE`` Gauss-Legendre nodes (absolute error < 0.03 in chord units, i.e.
< 0.01 px of edge position, checked against adaptive quadrature in the tests). Parameter vectors use the order of :data:`PARAMS`.
"""

from __future__ import annotations

import numba
import numpy as np

PARAMS = ("c", "R", "r", "e", "s", "b0", "b1", "A1", "A2", "k", "m", "g", "h")
"""Order of the profile-model parameters (pixels for c, R, r, e, s; g, h in powers of 1/grey units)."""
N_PARAMS = len(PARAMS)
N_QUADRATURE = 16
N_HERMITE = 8
WINDOW_SIGMAS = 6.0
_GL_X, _GL_W = np.polynomial.legendre.leggauss(N_QUADRATURE)
_GH_U, _GH_W = np.polynomial.hermite.hermgauss(N_HERMITE)
_GH_T = np.sqrt(2.0) * _GH_U  # t = y - sigma * _GH_T
_GH_W = _GH_W / np.sqrt(np.pi)
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
MIN_SIGMA_PX = 0.15
MAX_UNSHARP_AMOUNT = 3.0
UNSHARP_RATIO = (2.0, 40.0)
"""Bounds of m = (unsharp-mask radius) / (detector blur): an enhancement kernel is wider than
the detector's blur; without this bound a wide blur plus strong sharpening mimics a narrow blur."""
STEP_TOL_PX = 1e-4
"""The fit stops when no geometric parameter moves by more than this (px): 1e-5 mm at 0.1 mm pixels."""
MIN_WALL_PX = 0.3

# Fit status codes returned by fit_profiles.
FIT_OK = 0
FIT_MAX_ITER = 1
FIT_BAD_INPUT = 2


# ----------------------------------------------------------------------------- sampling
@numba.njit(cache=True)
def sample_profiles(image, centers_rc, normal_rc, tangent_rc, offsets_px, n_lines, line_step_px):
    """Bilinear thick profiles perpendicular to an axis.

    Parameters
    ----------
    image : float64 (rows, cols)
    centers_rc : float64 (n, 2)
        Profile centres ``(row, col)`` on the axis.
    normal_rc, tangent_rc : float64 (2,)
        Unit vectors ``(row, col)`` across and along the axis.
    offsets_px : float64 (m,)
        Sample positions along the normal (px).
    n_lines : int
        Parallel lines averaged per profile, spaced ``line_step_px`` along the tangent and
        centred on the profile centre.

    Returns
    -------
    float64 (n, m)
        Mean intensity; NaN where any line leaves the image or a coordinate is NaN.
    """
    n = centers_rc.shape[0]
    m = offsets_px.shape[0]
    rows, cols = image.shape
    out = np.empty((n, m))
    half = 0.5 * (n_lines - 1)
    for i in range(n):
        for j in range(m):
            acc = 0.0
            inside = True
            for k in range(n_lines):
                shift = (k - half) * line_step_px
                rr = centers_rc[i, 0] + offsets_px[j] * normal_rc[0] + shift * tangent_rc[0]
                cc = centers_rc[i, 1] + offsets_px[j] * normal_rc[1] + shift * tangent_rc[1]
                # Written so that a NaN coordinate counts as outside (int(NaN) would read anywhere).
                if not (rr >= 0.0 and cc >= 0.0 and rr <= rows - 1 and cc <= cols - 1):
                    inside = False
                    break
                r0 = min(int(rr), rows - 2)
                c0 = min(int(cc), cols - 2)
                fr = rr - r0
                fc = cc - c0
                acc += (
                    (1.0 - fr) * ((1.0 - fc) * image[r0, c0] + fc * image[r0, c0 + 1])
                    + fr * ((1.0 - fc) * image[r0 + 1, c0] + fc * image[r0 + 1, c0 + 1])
                )
            out[i, j] = acc / n_lines if inside else np.nan
    return out


def sample_profiles_numpy(image, centers_rc, normal_rc, tangent_rc, offsets_px, n_lines, line_step_px):
    """Plain-numpy reference for :func:`sample_profiles`."""
    image = np.asarray(image, dtype=np.float64)
    rows, cols = image.shape
    shifts = (np.arange(n_lines) - 0.5 * (n_lines - 1)) * line_step_px
    rr = (centers_rc[:, 0, None, None] + offsets_px[None, :, None] * normal_rc[0]
          + shifts[None, None, :] * tangent_rc[0])
    cc = (centers_rc[:, 1, None, None] + offsets_px[None, :, None] * normal_rc[1]
          + shifts[None, None, :] * tangent_rc[1])
    inside = (rr >= 0) & (cc >= 0) & (rr <= rows - 1) & (cc <= cols - 1)
    rr_c = np.clip(np.nan_to_num(rr), 0, rows - 1)
    cc_c = np.clip(np.nan_to_num(cc), 0, cols - 1)
    r0 = np.minimum(rr_c.astype(np.int64), rows - 2)
    c0 = np.minimum(cc_c.astype(np.int64), cols - 2)
    fr, fc = rr_c - r0, cc_c - c0
    val = ((1 - fr) * ((1 - fc) * image[r0, c0] + fc * image[r0, c0 + 1])
           + fr * ((1 - fc) * image[r0 + 1, c0] + fc * image[r0 + 1, c0 + 1]))
    out = val.sum(axis=2) / n_lines
    out[~inside.all(axis=2)] = np.nan
    return out


# ----------------------------------------------------------------------------- the model
@numba.njit(cache=True, fastmath=True)
def _blurred_chord(y, radius, sigma, gl_x, gl_w):
    """B(y; R, s) and its derivatives dB/dy, dB/dR, dB/ds (one point)."""
    if radius <= 0.0:
        return 0.0, 0.0, 0.0, 0.0
    lo = (y - WINDOW_SIGMAS * sigma) / radius
    hi = (y + WINDOW_SIGMAS * sigma) / radius
    if lo >= 1.0 or hi <= -1.0:
        return 0.0, 0.0, 0.0, 0.0
    if lo > -1.0 and hi < 1.0:
        # Window inside the disc: smooth chord, Gauss-Hermite in t.
        b = 0.0
        by = 0.0
        br = 0.0
        bs = 0.0
        r2 = radius * radius
        for q in range(_GH_T.shape[0]):
            t = y - sigma * _GH_T[q]
            root = np.sqrt(r2 - t * t)
            slope = -2.0 * t / root
            b += _GH_W[q] * 2.0 * root
            by += _GH_W[q] * slope
            br += _GH_W[q] * 2.0 * radius / root
            bs += _GH_W[q] * slope * (-_GH_T[q])
        return b, by, br, bs
    if lo > -1.0 or hi < 1.0:
        # One edge in the window: t = +-R*(1 - u^2) removes the square-root singularity with
        # one sqrt per node (no trigonometry). The left edge mirrors the right: B(y) = B(-y).
        sign = 1.0 if lo > -1.0 else -1.0
        yy = sign * y
        u_max = np.sqrt(1.0 - (sign * lo if sign > 0.0 else -hi))
        half = 0.5 * u_max
        inv_s = 1.0 / sigma
        b = 0.0
        by = 0.0
        br = 0.0
        bs = 0.0
        r2 = radius * radius
        for q in range(gl_x.shape[0]):
            u = half * (gl_x[q] + 1.0)
            root = np.sqrt(2.0 - u * u)
            t = radius * (1.0 - u * u)
            z = (yy - t) * inv_s
            g = _INV_SQRT_2PI * inv_s * np.exp(-0.5 * z * z)
            w = gl_w[q] * half
            chord_jac = 4.0 * r2 * u * u * root
            b += w * chord_jac * g
            by += w * chord_jac * (-z * inv_s) * g
            br += w * 4.0 * radius / root * g
            bs += w * chord_jac * g * (z * z - 1.0) * inv_s
        return b, sign * by, br, bs
    th1 = np.arcsin(max(lo, -1.0))
    th2 = np.arcsin(min(hi, 1.0))
    half = 0.5 * (th2 - th1)
    mid = 0.5 * (th2 + th1)
    inv_s = 1.0 / sigma
    b = 0.0
    by = 0.0
    br = 0.0
    bs = 0.0
    for q in range(gl_x.shape[0]):
        th = mid + half * gl_x[q]
        st = np.sin(th)
        ct = np.cos(th)
        z = (y - radius * st) * inv_s
        g = _INV_SQRT_2PI * inv_s * np.exp(-0.5 * z * z)
        w = gl_w[q] * half
        chord_jac = 2.0 * radius * radius * ct * ct
        b += w * chord_jac * g
        by += w * chord_jac * (-z * inv_s) * g
        br += w * 2.0 * radius * g
        bs += w * chord_jac * g * (z * z - 1.0) * inv_s
    return b, by, br, bs


def blurred_chord_numpy(y, radius, sigma):
    """Plain-numpy reference for the blurred chord ``B`` and ``dB/dy, dB/dR, dB/ds`` at points ``y``."""
    y = np.asarray(y, dtype=np.float64)
    out = np.zeros((4,) + y.shape)
    if radius <= 0.0:
        return out
    lo = (y - WINDOW_SIGMAS * sigma) / radius
    hi = (y + WINDOW_SIGMAS * sigma) / radius
    live = (lo < 1.0) & (hi > -1.0)
    th1 = np.arcsin(np.clip(lo, -1.0, 1.0))
    th2 = np.arcsin(np.clip(hi, -1.0, 1.0))
    half = 0.5 * (th2 - th1)
    mid = 0.5 * (th2 + th1)
    th = mid[..., None] + half[..., None] * _GL_X
    st, ct = np.sin(th), np.cos(th)
    z = (y[..., None] - radius * st) / sigma
    g = _INV_SQRT_2PI / sigma * np.exp(-0.5 * z * z)
    w = _GL_W * half[..., None]
    chord_jac = 2.0 * radius * radius * ct * ct
    out[0] = (w * chord_jac * g).sum(-1)
    out[1] = (w * chord_jac * (-z / sigma) * g).sum(-1)
    out[2] = (w * 2.0 * radius * g).sum(-1)
    out[3] = (w * chord_jac * g * (z * z - 1.0) / sigma).sum(-1)
    out[:, ~live] = 0.0
    for sign in (1.0, -1.0):
        # One edge in the window (see _blurred_chord): t = +-R*(1 - u^2), mirrored for the left.
        sel = live & ((lo > -1.0) & (hi >= 1.0) if sign > 0 else (lo <= -1.0) & (hi < 1.0))
        if not sel.any():
            continue
        yy = sign * y[sel]
        u_max = np.sqrt(1.0 - (lo[sel] if sign > 0 else -hi[sel]))
        half_u = 0.5 * u_max
        u = half_u[..., None] * (_GL_X + 1.0)
        root = np.sqrt(2.0 - u * u)
        t = radius * (1.0 - u * u)
        z = (yy[..., None] - t) / sigma
        g = _INV_SQRT_2PI / sigma * np.exp(-0.5 * z * z)
        w = _GL_W * half_u[..., None]
        chord_jac = 4.0 * radius * radius * u * u * root
        out[0, sel] = (w * chord_jac * g).sum(-1)
        out[1, sel] = sign * (w * chord_jac * (-z / sigma) * g).sum(-1)
        out[2, sel] = (w * 4.0 * radius / root * g).sum(-1)
        out[3, sel] = (w * chord_jac * g * (z * z - 1.0) / sigma).sum(-1)
    inner = (lo > -1.0) & (hi < 1.0)
    if inner.any():
        t = y[inner][..., None] - sigma * _GH_T
        root = np.sqrt(radius * radius - t * t)
        slope = -2.0 * t / root
        out[0, inner] = (_GH_W * 2.0 * root).sum(-1)
        out[1, inner] = (_GH_W * slope).sum(-1)
        out[2, inner] = (_GH_W * 2.0 * radius / root).sum(-1)
        out[3, inner] = (_GH_W * slope * (-_GH_T)).sum(-1)
    return out


@numba.njit(cache=True)
def profile_model(x, p, gl_x, gl_w, unsharp):
    """Model values f (m,) and Jacobian J (m, N_PARAMS) at sample positions x for parameters p.

    ``unsharp`` False skips the edge-enhancement terms (exact when ``k == 0``; the k and m
    columns of J are then zero).
    """
    m = x.shape[0]
    f = np.empty(m)
    jac = np.zeros((m, N_PARAMS))
    c, big_r, small_r, e, s, b0, b1, a1, a2 = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]
    k, ratio, g, h = p[9], p[10], p[11], p[12]
    q = np.sqrt(1.0 + ratio * ratio)
    sw = s * q
    for j in range(m):
        bo, boy, bor, bos = _blurred_chord(x[j] - c, big_r, s, gl_x, gl_w)
        bi, biy, bir, bis = _blurred_chord(x[j] - c - e, small_r, s, gl_x, gl_w)
        if unsharp:
            wo, woy, wor, wos = _blurred_chord(x[j] - c, big_r, sw, gl_x, gl_w)
            wi, wiy, wir, wis = _blurred_chord(x[j] - c - e, small_r, sw, gl_x, gl_w)
        else:
            wo = woy = wor = wos = wi = wiy = wir = wis = 0.0
        uo = (1.0 + k) * bo - k * wo
        ui = (1.0 + k) * bi - k * wi
        uoy = (1.0 + k) * boy - k * woy
        uiy = (1.0 + k) * biy - k * wiy
        v = a1 * uo - a2 * ui
        f[j] = b0 + b1 * x[j] + v + (g + h * v) * v * v
        bend = 1.0 + (2.0 * g + 3.0 * h * v) * v  # d f / d v
        jac[j, 0] = bend * (-a1 * uoy + a2 * uiy)
        jac[j, 1] = bend * a1 * ((1.0 + k) * bor - k * wor)
        jac[j, 2] = -bend * a2 * ((1.0 + k) * bir - k * wir)
        jac[j, 3] = bend * a2 * uiy
        jac[j, 4] = bend * (a1 * ((1.0 + k) * bos - k * wos * q) - a2 * ((1.0 + k) * bis - k * wis * q))
        jac[j, 5] = 1.0
        jac[j, 6] = x[j]
        jac[j, 7] = bend * uo
        jac[j, 8] = -bend * ui
        if unsharp:
            jac[j, 9] = bend * (a1 * (bo - wo) - a2 * (bi - wi))
            jac[j, 10] = -bend * k * (a1 * wos - a2 * wis) * s * ratio / q
        jac[j, 11] = v * v
        jac[j, 12] = v * v * v
    return f, jac


def profile_model_numpy(x, p, unsharp=True):
    """Plain-numpy reference for :func:`profile_model` (without the quadrature arguments)."""
    x = np.asarray(x, dtype=np.float64)
    c, big_r, small_r, e, s, b0, b1, a1, a2, k, ratio, g, h = p
    q = np.sqrt(1.0 + ratio * ratio)
    bo = blurred_chord_numpy(x - c, big_r, s)
    bi = blurred_chord_numpy(x - c - e, small_r, s)
    if unsharp:
        wo = blurred_chord_numpy(x - c, big_r, s * q)
        wi = blurred_chord_numpy(x - c - e, small_r, s * q)
    else:
        wo = np.zeros_like(bo)
        wi = np.zeros_like(bi)
    uo = (1.0 + k) * bo - k * wo  # rows: value, d/dy, d/dR, d/ds (wo's d/ds is d/dsw)
    ui = (1.0 + k) * bi - k * wi
    v = a1 * uo[0] - a2 * ui[0]
    f = b0 + b1 * x + v + (g + h * v) * v * v
    zero = np.zeros_like(x)
    jac_v = np.stack(  # d v / d p for the bone's parameters (zero for b0, b1, g, h)
        [-a1 * uo[1] + a2 * ui[1], a1 * uo[2], -a2 * ui[2], a2 * ui[1],
         a1 * ((1.0 + k) * bo[3] - k * wo[3] * q) - a2 * ((1.0 + k) * bi[3] - k * wi[3] * q),
         zero, zero, uo[0], -ui[0],
         a1 * (bo[0] - wo[0]) - a2 * (bi[0] - wi[0]) if unsharp else zero,
         -k * (a1 * wo[3] - a2 * wi[3]) * s * ratio / q if unsharp else zero, zero, zero],
        axis=1,
    )
    jac = jac_v * (1.0 + (2.0 * g + 3.0 * h * v) * v)[:, None]
    jac[:, 5], jac[:, 6], jac[:, 11], jac[:, 12] = 1.0, x, v * v, v * v * v
    return f, jac


# ----------------------------------------------------------------------------- the fit
@numba.njit(cache=True)
def _feasible(p, x_lo, x_hi):
    # Walls at least MIN_WALL_PX, canal inside the bone, bone inside the profile window.
    if p[4] < MIN_SIGMA_PX or p[4] > 0.25 * (x_hi - x_lo):
        return False
    if p[2] < MIN_WALL_PX or p[1] - p[2] - abs(p[3]) < MIN_WALL_PX:
        return False
    # A blur wider than the thinner wall cannot be told from a thinner wall: not allowed.
    if p[4] > p[1] - p[2] - abs(p[3]):
        return False
    if p[0] - p[1] < x_lo or p[0] + p[1] > x_hi:
        return False
    return True


@numba.njit(cache=True)
def _solve_spd(a, b):
    """Solve a x = b for a small symmetric positive-definite a (Cholesky); NaNs if not SPD."""
    n = a.shape[0]
    low = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            acc = a[i, j]
            for k in range(j):
                acc -= low[i, k] * low[j, k]
            if i == j:
                if acc <= 0.0:
                    return np.full(n, np.nan)
                low[i, i] = np.sqrt(acc)
            else:
                low[i, j] = acc / low[j, j]
    z = np.empty(n)
    for i in range(n):
        acc = b[i]
        for k in range(i):
            acc -= low[i, k] * z[k]
        z[i] = acc / low[i, i]
    out = np.empty(n)
    for i in range(n - 1, -1, -1):
        acc = z[i]
        for k in range(i + 1, n):
            acc -= low[k, i] * out[k]
        out[i] = acc / low[i, i]
    return out


@numba.njit(cache=True)
def fit_one_profile(x, y, p0, free, max_iter, gl_x, gl_w):
    """Levenberg-Marquardt fit of the blurred hollow-cylinder model to one profile.

    Parameters
    ----------
    x, y : float64 (m,)
        Sample positions (px) and intensities; NaN samples are not allowed.
    p0 : float64 (N_PARAMS,)
        Start parameters (order :data:`PARAMS`).
    free : bool (N_PARAMS,)
        Which parameters are fitted; the others stay at their start value.
    max_iter : int

    Returns
    -------
    p : float64 (N_PARAMS,), rms : float, iterations : int, status : int (FIT_OK, FIT_MAX_ITER, FIT_BAD_INPUT)
    """
    n_par = p0.shape[0]
    p = p0.copy()
    x_lo = x[0]
    x_hi = x[x.shape[0] - 1]
    if not _feasible(p, x_lo, x_hi):
        return p, np.inf, 0, FIT_BAD_INPUT
    unsharp = free[9] or p[9] != 0.0
    f, jac = profile_model(x, p, gl_x, gl_w, unsharp)
    res = y - f
    cost = np.sum(res * res)
    lam = 1e-3
    status = FIT_MAX_ITER
    it = 0
    rel = 1.0
    step = np.zeros(n_par)
    while it < max_iter:
        it += 1
        jtj = np.zeros((n_par, n_par))
        g = np.zeros(n_par)
        for a in range(n_par):
            if not free[a]:
                jtj[a, a] = 1.0
                continue
            for b in range(a, n_par):
                if free[b]:
                    acc = 0.0
                    for j in range(x.shape[0]):
                        acc += jac[j, a] * jac[j, b]
                    jtj[a, b] = acc
                    jtj[b, a] = acc
            acc = 0.0
            for j in range(x.shape[0]):
                acc += jac[j, a] * res[j]
            g[a] = acc
        improved = False
        while lam < 1e12:
            damped = jtj.copy()
            for a in range(n_par):
                if free[a]:
                    damped[a, a] = jtj[a, a] * (1.0 + lam) + 1e-12
            step = _solve_spd(damped, g)
            if np.isnan(step[0]):
                lam *= 10.0
                continue
            trial = p + step
            # Bounds of the enhancement parameters are projections, not rejections: k = 0
            # (no enhancement) is a common optimum.
            trial[9] = min(max(trial[9], 0.0), MAX_UNSHARP_AMOUNT)
            trial[10] = min(max(trial[10], UNSHARP_RATIO[0]), UNSHARP_RATIO[1])
            if not _feasible(trial, x_lo, x_hi):
                lam *= 10.0
                continue
            f_t, jac_t = profile_model(x, trial, gl_x, gl_w, unsharp)
            res_t = y - f_t
            cost_t = np.sum(res_t * res_t)
            if cost_t <= cost:
                rel = (cost - cost_t) / max(cost, 1e-300)
                p = trial
                f, jac, res = f_t, jac_t, res_t
                cost = cost_t
                lam = max(lam / 5.0, 1e-9)
                improved = True
                break
            lam *= 10.0
        if not improved:
            status = FIT_OK  # no step lowers the cost: at the minimum to machine precision
            break
        step_max = 0.0
        for a in range(5):
            step_max = max(step_max, abs(step[a]))
        if step_max < STEP_TOL_PX:
            status = FIT_OK
            break
    rms = np.sqrt(cost / x.shape[0])
    return p, rms, it, status


@numba.njit(cache=True)
def fit_profiles(x, profiles, p0, free, max_iter):
    """Fit :func:`fit_one_profile` to every row of ``profiles`` (n, m), each from its own p0 row.

    Rows containing NaN are skipped (status FIT_BAD_INPUT). Returns params (n, N_PARAMS), rms (n,),
    iterations (n,), status (n,).
    """
    n = profiles.shape[0]
    out = np.empty((n, N_PARAMS))
    rms = np.empty(n)
    iters = np.zeros(n, dtype=np.int64)
    status = np.empty(n, dtype=np.int64)
    gl_x = _GL_X
    gl_w = _GL_W
    for i in range(n):
        bad = False
        for j in range(profiles.shape[1]):
            if np.isnan(profiles[i, j]):
                bad = True
                break
        if bad:
            out[i, :] = p0[i, :]
            rms[i] = np.inf
            status[i] = FIT_BAD_INPUT
            continue
        p, r, it, st = fit_one_profile(x, profiles[i], p0[i], free, max_iter, gl_x, gl_w)
        out[i, :] = p
        rms[i] = r
        iters[i] = it
        status[i] = st
    return out, rms, iters, status


def _feasible_numpy(p, x_lo, x_hi):
    if p[4] < MIN_SIGMA_PX or p[4] > 0.25 * (x_hi - x_lo):
        return False
    if p[2] < MIN_WALL_PX or p[1] - p[2] - abs(p[3]) < MIN_WALL_PX:
        return False
    if p[4] > p[1] - p[2] - abs(p[3]):
        return False
    return not (p[0] - p[1] < x_lo or p[0] + p[1] > x_hi)


def fit_one_profile_numpy(x, y, p0, free, max_iter):
    """Plain-numpy reference for :func:`fit_one_profile` (same algorithm, numpy linear algebra)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    free = np.asarray(free, dtype=bool)
    p = np.array(p0, dtype=np.float64)
    if not _feasible_numpy(p, x[0], x[-1]):
        return p, np.inf, 0, FIT_BAD_INPUT
    unsharp = bool(free[9]) or p[9] != 0.0
    f, jac = profile_model_numpy(x, p, unsharp)
    res = y - f
    cost = float(res @ res)
    lam = 1e-3
    status, it, rel = FIT_MAX_ITER, 0, 1.0
    fixed = ~free
    while it < max_iter:
        it += 1
        jf = jac * free
        jtj = jf.T @ jf
        jtj[fixed, fixed] = 1.0
        g = jf.T @ res
        improved = False
        while lam < 1e12:
            damped = jtj.copy()
            idx = np.flatnonzero(free)
            damped[idx, idx] = jtj[idx, idx] * (1.0 + lam) + 1e-12
            try:
                np.linalg.cholesky(damped)
            except np.linalg.LinAlgError:
                lam *= 10.0
                continue
            step = np.linalg.solve(damped, g)
            trial = p + step
            trial[9] = min(max(trial[9], 0.0), MAX_UNSHARP_AMOUNT)
            trial[10] = min(max(trial[10], UNSHARP_RATIO[0]), UNSHARP_RATIO[1])
            if not _feasible_numpy(trial, x[0], x[-1]):
                lam *= 10.0
                continue
            f_t, jac_t = profile_model_numpy(x, trial, unsharp)
            res_t = y - f_t
            cost_t = float(res_t @ res_t)
            if cost_t <= cost:
                rel = (cost - cost_t) / max(cost, 1e-300)
                p, f, jac, res, cost = trial, f_t, jac_t, res_t, cost_t
                lam = max(lam / 5.0, 1e-9)
                improved = True
                break
            lam *= 10.0
        if not improved:
            status = FIT_OK
            break
        if np.abs(step[:5]).max() < STEP_TOL_PX:
            status = FIT_OK
            break
    return p, float(np.sqrt(cost / x.size)), it, status
