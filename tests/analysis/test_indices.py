"""Radiogrammetric indices: formulas, calibration anchor, BHI scale, combination rule."""

import math

import pytest

from analysis import indices


def test_young_adult_anchor_gives_published_mean():
    # T = 2.0 mm, W = 8.0 mm is the documented calibration point of RHO_G_CM3 (0.598 g/cm2, Black 2001).
    assert indices.mci(2.0, 8.0) == pytest.approx(0.5)
    assert indices.vpa_mm(2.0, 8.0) == pytest.approx(math.pi * 1.5)
    assert indices.dxr_bmd_g_cm2(2.0, 8.0) == pytest.approx(0.598, abs=0.0005)


def test_porosity_lowers_bmd_proportionally():
    full = indices.dxr_bmd_g_cm2(1.8, 7.5, porosity=0.0)
    assert indices.dxr_bmd_g_cm2(1.8, 7.5, porosity=0.1) == pytest.approx(0.9 * full)


@pytest.mark.parametrize("t, w, l, published", [(0.74, 3.2, 16.4, 4.8), (0.58, 4.4, 24.0, 3.4)])
def test_bhi_on_published_scale(t, w, l, published):
    # ICCBH 2019 infant values (dxr-method.md 1.6): reported BHI is 10x the mm formula.
    assert indices.bhi(t, w, l) == pytest.approx(published, abs=0.06)


def test_thinner_cortex_means_lower_everything():
    a = indices.combine([(2.0, 8.0, 65.0)])
    b = indices.combine([(1.5, 8.0, 65.0)])
    assert b.mci < a.mci and b.vpa_mm < a.vpa_mm and b.bhi < a.bhi and b.dxr_bmd_g_cm2 < a.dxr_bmd_g_cm2


def test_combine_averages_t_w_l_first():
    bones = [(2.2, 8.6, 68.0), (2.0, 8.1, 65.0), (1.5, 6.9, 58.0)]
    c = indices.combine(bones)
    t, w, l = (sum(b[i] for b in bones) / 3 for i in range(3))
    assert (c.cortical_thickness_mm, c.outer_width_mm, c.length_mm) == pytest.approx((t, w, l))
    assert c.vpa_mm == pytest.approx(indices.vpa_mm(t, w))
    assert c.bhi == pytest.approx(indices.bhi(t, w, l))
    # ... which is not the mean of the per-bone indices (the rule matters and is fixed).
    assert c.mci != pytest.approx(sum(indices.mci(b[0], b[1]) for b in bones) / 3, rel=1e-6)
    assert c.porosity == indices.POROSITY == 0.0


def test_combine_two_bones_and_missing_length():
    c = indices.combine([(2.0, 8.0, 60.0), (1.8, 7.4, None)])
    assert c.cortical_thickness_mm == pytest.approx(1.9)
    assert c.length_mm is None and c.bhi is None
    with pytest.raises(ValueError):
        indices.combine([])
