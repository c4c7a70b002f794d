"""Stages 4-5 of analysis.locate: the canonical frame (frame.py), the shaft lines (shafts.py) and
the joints at their ends (joints.py)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.locate.body import _work_index
from analysis.locate.frame import _HandFrame, _to_image_rc
from analysis.locate.joints import _axial_profile, _axis_of, _bases_by_scale, _fine_for
from analysis.locate.shafts import NAMES, _match_in_order
from tests.analysis.locate_stages import run_stages
from tests.phantom import make_hand

SPACING = 0.2  # mm


@pytest.fixture(scope="module")
def stages():
    image, truth = make_hand(seed=1, spacing_mm=SPACING, rotation_deg=30.0, field_mm=(250, 220))
    return image, truth, run_stages(image, SPACING)


def test_frame_round_trip_and_image_pixels():
    frame = _HandFrame(np.array([50.0, 40.0]), np.array([0.6, -0.8]), np.array([0.8, 0.6]), (30, 20))
    y, x = np.array([3.0, 17.5]), np.array([2.0, 11.0])
    r, c = frame.to_work(y, x)
    yb, xb = frame.from_work(r, c)
    assert yb == pytest.approx(y) and xb == pytest.approx(x)
    # The frame's centre pixel is the working pixel ``centre``; its image pixel is that block's centre.
    assert _to_image_rc(frame, 3, 15.0, 10.0) == pytest.approx((50 * 3 + 1.0, 40 * 3 + 1.0))
    assert _work_index(50 * 3 + 1.0, 3) == 50


def test_match_in_order_keeps_the_order_and_leaves_unmatched_predictions():
    preds = np.array([50.0, 40.0, 30.0, 20.0])
    assert list(_match_in_order(preds, np.array([52.0, 41.0, 28.0]), 5.0)) == [52.0, 41.0, 28.0, 20.0]
    # A peak between two predictions goes to the nearer one only.
    assert list(_match_in_order(preds, np.array([44.0]), 5.0)) == [50.0, 44.0, 30.0, 20.0]
    assert list(_match_in_order(preds, np.array([]), 5.0)) == list(preds)


def test_shaft_lines_run_along_the_true_metacarpals(stages):
    image, truth, st = stages
    assert np.all(st.shafts.support[:3] >= 0.5)
    assert np.all(st.shafts.gaps > 0.45)
    for name in ("II", "III", "IV"):
        k = NAMES.index(name)
        head_y, base_y = st.ends[name]
        axis = _axis_of(st.hand, st.shafts, name, head_y, base_y, SPACING)
        true = truth.axis(name)
        true_mid = 0.5 * (np.asarray(true.base_rc) + np.asarray(true.head_rc))
        assert np.hypot(*(np.asarray(axis.mid_rc) - true_mid)) * SPACING < 5.0, name
        # The line's direction is the bone's (within 5 degrees).
        d_true = np.subtract(true.head_rc, true.base_rc)
        d = np.subtract(axis.head_rc, axis.base_rc)
        cos = d @ d_true / np.hypot(*d) / np.hypot(*d_true)
        assert cos > np.cos(np.radians(5.0)), name
        assert 0.0 < axis.confidence <= 1.0 and st.shafts.rms[k] < 3.0


def test_heads_on_the_mcp_joints_and_bases_at_one_hand_scale(stages):
    image, truth, st = stages
    for name in ("II", "III", "IV"):
        head_y, _ = st.ends[name]
        axis = _axis_of(st.hand, st.shafts, name, head_y, head_y, SPACING)
        assert np.hypot(*np.subtract(axis.head_rc, truth.axis(name).head_rc)) * SPACING < 6.0, name
    fines = {n: _fine_for(image, st.hand, st.shafts, NAMES.index(n), SPACING) for n in st.ends}
    details: dict = {}
    ends = _bases_by_scale(st.ends, fines, st.hand.s, exclude=set(), details=details)
    assert 2.2 <= details["length_per_spacing"] <= 4.2
    for name in ("II", "III", "IV"):
        axis = _axis_of(st.hand, st.shafts, name, *ends[name], SPACING)
        assert axis.length_mm == pytest.approx(truth.bones[name].length_mm, rel=0.15), name


def test_axial_profile_samples_along_the_segment():
    image = np.add.outer(np.zeros(40), np.arange(60.0))  # value = column
    t, vals = _axial_profile(image, np.array([20.0, 10.0]), np.array([20.0, 50.0]), 1.0, 3.0)
    assert t[0] == 0.0 and t[-1] == 1.0 and vals.size == 41
    assert vals == pytest.approx(10.0 + 40.0 * t)


def test_each_centring_pass_moves_a_line_across_a_shaft_further_onto_the_bone():
    """A line that runs from one cortex of a hollow shaft to the other (what the ridges of the two
    cortices can give) is re-centred on the bone signal; a second pass, starting from the first,
    ends nearer the shaft's centre line (why a refused hand is re-centred once more)."""
    from analysis.locate.shafts import _recentre_lines

    s = 20.0  # finger spacing, pixels
    rows = np.arange(40, 100)
    x = np.arange(200, dtype=float)[None, :]
    centre = 100.0
    # A hollow tube: bright walls at +-3 px around the centre, a darker canal between.
    bone = np.exp(-0.5 * ((x - centre - 3.0) / 1.5) ** 2) + np.exp(-0.5 * ((x - centre + 3.0) / 1.5) ** 2)
    bone = np.repeat(bone + 0.3 * np.exp(-0.5 * ((x - centre) / 3.0) ** 2), 120, axis=0)
    slant = 0.1  # px per row: from one wall at the top of the band to the other at its foot
    lines = np.array([[centre - 3.0 - slant * rows[0], slant]])
    support = np.ones(1)

    def off_centre(ln):
        xs = ln[0, 0] + ln[0, 1] * rows
        return float(np.max(np.abs(xs - centre)))

    start = off_centre(lines)
    _recentre_lines(lines, support, rows, bone, s, bone.shape[1])
    once = off_centre(lines)
    _recentre_lines(lines, support, rows, bone, s, bone.shape[1])
    twice = off_centre(lines)
    assert twice < once < start
    assert twice < 1.0  # within a pixel of the centre line along the whole band
