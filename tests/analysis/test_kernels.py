"""Numba kernels against their plain-numpy references, and the model against exact integrals."""

import numpy as np
import pytest
from scipy import integrate, ndimage

from analysis import kernels

GL = (kernels._GL_X, kernels._GL_W)
P_TRUE = np.array([0.7, 40.0, 22.0, 0.8, 1.3, 0.5, 0.002, 0.1, 0.085, 0.6, 4.0, 0.03, -0.002])
P_PLAIN = P_TRUE.copy()
P_PLAIN[9] = 0.0  # no edge enhancement
P_PLAIN[11] = P_PLAIN[12] = 0.0  # grey linear in attenuation
X = np.arange(-60.0, 61.0, 1.0)


def _rel(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def test_sample_profiles_matches_numpy_and_scipy():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(120, 150)).cumsum(axis=0).cumsum(axis=1)
    centers = rng.uniform([-5, -5], [125, 155], size=(30, 2))  # some partly outside the image
    ang = 0.6
    normal = np.array([np.sin(ang), np.cos(ang)])
    tangent = np.array([np.cos(ang), -np.sin(ang)])
    offsets = np.arange(-20.0, 20.5, 0.5)
    got = kernels.sample_profiles(image, centers, normal, tangent, offsets, 3, 0.7)
    ref = kernels.sample_profiles_numpy(image, centers, normal, tangent, offsets, 3, 0.7)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert np.isnan(got).any() and (~np.isnan(got)).any()
    ok = ~np.isnan(got)
    assert _rel(got[ok], ref[ok]) < 1e-9
    # Independent check of one-line bilinear sampling against scipy.
    single = kernels.sample_profiles(image, centers, normal, tangent, offsets, 1, 1.0)
    rr = centers[:, 0, None] + offsets[None, :] * normal[0]
    cc = centers[:, 1, None] + offsets[None, :] * normal[1]
    sc = ndimage.map_coordinates(image, [rr.ravel(), cc.ravel()], order=1).reshape(rr.shape)
    ok = ~np.isnan(single)
    assert _rel(single[ok], sc[ok]) < 1e-9


def test_sample_profiles_nan_centre_is_outside_in_both_versions():
    """A NaN coordinate failed every ``< 0`` / ``> rows - 1`` test, so the kernel read pixels at
    ``int(NaN)`` (no bounds check in numba); it must give NaN like a profile off the image."""
    image = np.arange(40.0 * 50.0).reshape(40, 50)
    centers = np.array([[20.0, 25.0], [np.nan, 25.0], [20.0, np.nan]])
    normal, tangent = np.array([0.0, 1.0]), np.array([1.0, 0.0])
    offsets = np.arange(-3.0, 3.5, 1.0)
    for sample in (kernels.sample_profiles, kernels.sample_profiles_numpy):
        got = sample(image, centers, normal, tangent, offsets, 3, 0.5)
        assert np.isnan(got[1:]).all()
        assert np.allclose(got[0], image[20, 22:29])


# sigma/R up to 0.1 covers the worst real case: inner radius 2 mm at 0.08 mm pixels, blur 0.2 mm.
@pytest.mark.parametrize("radius, sigma", [(40.0, 0.5), (40.0, 4.0), (12.0, 1.0), (25.0, 2.5), (12.0, 0.3)])
def test_blurred_chord_against_adaptive_quadrature(radius, sigma):
    def exact(y):
        a, b = max(-radius, y - 10 * sigma), min(radius, y + 10 * sigma)
        if a >= b:
            return 0.0
        f = lambda t: 2 * np.sqrt(max(radius**2 - t * t, 0.0)) * np.exp(-0.5 * ((y - t) / sigma) ** 2) / (
            np.sqrt(2 * np.pi) * sigma)
        pts = [p for p in (-radius, radius) if a < p < b]
        return integrate.quad(f, a, b, points=pts or None, limit=200, epsabs=1e-11)[0]

    ys = np.linspace(-radius - 8 * sigma, radius + 8 * sigma, 97) + 0.013
    got = kernels.blurred_chord_numpy(ys, radius, sigma)[0]
    ref = np.array([exact(y) for y in ys])
    # 0.05 chord units at an edge slope of >= sqrt(R/sigma) units/px is < 0.01 px of edge position.
    assert np.max(np.abs(got - ref)) < 0.05
    numba_vals = np.array([kernels._blurred_chord(y, radius, sigma, *GL) for y in ys])
    assert _rel(numba_vals.T, kernels.blurred_chord_numpy(ys, radius, sigma)) < 1e-9


def test_profile_model_numba_equals_numpy_and_jacobian_is_the_derivative():
    f, jac = kernels.profile_model(X, P_TRUE, *GL, True)
    f_ref, jac_ref = kernels.profile_model_numpy(X, P_TRUE)
    assert _rel(f, f_ref) < 1e-9
    assert _rel(jac, jac_ref) < 1e-9
    # Without enhancement the cheap path is exact.
    assert _rel(kernels.profile_model(X, P_PLAIN, *GL, False)[0], kernels.profile_model_numpy(X, P_PLAIN, True)[0]) < 1e-12
    for k in range(kernels.N_PARAMS):
        h = 1e-5 * max(1.0, abs(P_TRUE[k]))
        up, dn = P_TRUE.copy(), P_TRUE.copy()
        up[k] += h
        dn[k] -= h
        numeric = (kernels.profile_model_numpy(X, up)[0] - kernels.profile_model_numpy(X, dn)[0]) / (2 * h)
        # The quadrature is not differentiated exactly (worst for sigma and m, whose integrand
        # (z^2 - 1) G is the least smooth); a few per cent of the column's scale is plenty for LM.
        tol = 0.15 if kernels.PARAMS[k] in ("s", "m") else 0.02
        assert np.max(np.abs(numeric - jac_ref[:, k])) < tol * np.max(np.abs(jac_ref[:, k])) + 1e-9, kernels.PARAMS[k]


def _start(p):
    p0 = p.copy()
    p0[0] += 1.5
    p0[1] *= 1.04
    p0[2] *= 0.93
    p0[3] = 0.0
    p0[4] *= 1.3
    p0[7] *= 1.1
    p0[9], p0[10] = 0.3, 5.0
    p0[11] = p0[12] = 0.0
    return p0


@pytest.mark.parametrize("truth", [P_TRUE, P_PLAIN], ids=["edge-enhanced", "plain"])
def test_fit_recovers_noise_free_parameters(truth):
    y = kernels.profile_model_numpy(X, truth)[0]
    free = np.ones(kernels.N_PARAMS, dtype=bool)
    p, rms, iters, status = kernels.fit_one_profile(X, y, _start(truth), free, 200, *GL)
    assert status == kernels.FIT_OK
    assert rms < 1e-5
    assert np.allclose(p[:4], truth[:4], atol=5e-3)
    assert p[9] == pytest.approx(truth[9], abs=0.02)
    assert p[11] == pytest.approx(truth[11], abs=1e-3) and p[12] == pytest.approx(truth[12], abs=1e-4)


DISPLAY_CURVES = {
    "gamma 0.6": lambda x: x ** 0.6,
    "gamma 1.6": lambda x: x ** 1.6,
    "linear in exposure": lambda x: 1.0 - np.exp(-2.0 * x),
}


@pytest.mark.parametrize("curve", sorted(DISPLAY_CURVES))
def test_the_bend_terms_recover_the_walls_under_a_display_curve(curve):
    """A profile passed through a display curve (not the model's polynomial) is fitted to the
    right walls and width with g and h free; held at 0 they come out several times further off."""
    plain = kernels.profile_model_numpy(X, P_PLAIN)[0]
    window = (plain - plain.min()) / (plain.max() - plain.min()) * 0.6 + 0.2  # the bone inside the window
    shown = DISPLAY_CURVES[curve]
    y = shown(window) / (shown(0.8) - shown(0.2))  # contrast about 1, as measure.py fits
    start = _start(P_PLAIN)
    start[9] = 0.0
    start[5], start[7], start[8] = y[0], start[7] / np.ptp(plain), start[8] / np.ptp(plain)
    free = np.ones(kernels.N_PARAMS, dtype=bool)
    free[9] = free[10] = False
    bent, _, _, status = kernels.fit_one_profile(X, y, start, free, 300, *GL)
    straight = free.copy()
    straight[11] = straight[12] = False
    flat = kernels.fit_one_profile(X, y, start, straight, 300, *GL)[0]
    assert status == kernels.FIT_OK
    wall_true, width_true = P_PLAIN[1] - P_PLAIN[2], 2 * P_PLAIN[1]
    # (A curve linear in exposure bends the width far more than the walls: 0.06 px is the floor.)
    assert abs(bent[1] - bent[2] - wall_true) < max(0.3 * abs(flat[1] - flat[2] - wall_true), 0.06)
    assert abs(2 * bent[1] - width_true) < 0.3 * abs(2 * flat[1] - width_true)
    assert abs(2 * bent[1] - width_true) < 0.1  # px, on an 80 px wide bone


def test_fit_numba_equals_numpy_on_noisy_profiles():
    rng = np.random.default_rng(5)
    free = np.ones(kernels.N_PARAMS, dtype=bool)
    fixed_sigma = free.copy()
    fixed_sigma[4] = False
    for trial in range(4):
        y = kernels.profile_model_numpy(X, P_TRUE)[0] + 0.01 * rng.standard_normal(X.size)
        for mask in (free, fixed_sigma):
            got = kernels.fit_one_profile(X, y, _start(P_TRUE), mask, 100, *GL)
            ref = kernels.fit_one_profile_numpy(X, y, _start(P_TRUE), mask, 100)
            assert got[3] == ref[3] == kernels.FIT_OK
            assert got[2] == ref[2]
            assert _rel(got[0], ref[0]) < 1e-9
            assert abs(got[1] - ref[1]) <= 1e-9 * ref[1]
            if not mask[4]:
                assert got[0][4] == _start(P_TRUE)[4]  # a fixed parameter stays put
            assert 0.0 <= got[0][9] <= kernels.MAX_UNSHARP_AMOUNT


def test_fit_profiles_batch_skips_nan_rows_and_matches_single_fits():
    rng = np.random.default_rng(9)
    y = kernels.profile_model_numpy(X, P_TRUE)[0]
    profiles = y[None, :] + 0.01 * rng.standard_normal((4, X.size))
    profiles[2, 7] = np.nan
    p0 = np.tile(_start(P_TRUE), (4, 1))
    free = np.ones(kernels.N_PARAMS, dtype=bool)
    params, rms, iters, status = kernels.fit_profiles(X, profiles, p0, free, 100)
    assert status[2] == kernels.FIT_BAD_INPUT and np.isinf(rms[2])
    for i in (0, 1, 3):
        single = kernels.fit_one_profile_numpy(X, profiles[i], p0[i], free, 100)
        assert _rel(params[i], single[0]) < 1e-9


def test_infeasible_start_is_reported_not_fitted():
    bad = P_TRUE.copy()
    bad[2] = bad[1] + 1.0  # canal wider than the bone
    y = kernels.profile_model_numpy(X, P_TRUE)[0]
    free = np.ones(kernels.N_PARAMS, dtype=bool)
    assert kernels.fit_one_profile(X, y, bad, free, 50, *GL)[3] == kernels.FIT_BAD_INPUT
    assert kernels.fit_one_profile_numpy(X, y, bad, free, 50)[3] == kernels.FIT_BAD_INPUT
