"""Stage 3 of analysis.locate (analysis/locate/view.py): lateral, oblique, not a hand; the PA check."""

from __future__ import annotations

import numpy as np

from analysis.locate.fingers import _best_finger_cluster, _Finger
from analysis.locate.shafts import _Shafts
from analysis.locate import locate_hand
from analysis.locate.view import (
    LATERAL_MAX_RIDGES, MAX_FINGER_ANGLE_DEG, _fingers_not_parallel, _non_pa_view, _palm_ridge_count, _shafts_overlap,
)
from tests.analysis.locate_stages import run_stages
from tests.phantom import make_hand

SPACING = 0.2  # mm


def _strip(length_px, width_px=10.0, base=(300.0, 100.0)):
    base = np.array(base)
    return _Finger(base, base + [-length_px, 0.0], length_px, width_px, int(length_px * width_px), 1)


def test_no_finger_is_not_a_hand():
    st = run_stages(make_hand(seed=1, spacing_mm=SPACING)[0], SPACING, until="body")
    loc = _non_pa_view(st.w, [], {})
    assert loc.refusal[0] == "not_pa_hand" and loc.view is None and loc.details["fingers_found"] == 0


def test_one_short_nub_is_not_a_hand_one_long_strip_is_lateral():
    st = run_stages(make_hand(seed=1, spacing_mm=SPACING)[0], SPACING, until="body")
    px_per_mm = 1.0 / st.w.spacing_mm  # 0.4 mm working pixels at 0.2 mm
    nub = _non_pa_view(st.w, [_strip(15 * px_per_mm)], {})
    assert nub.refusal[0] == "not_pa_hand" and nub.details["finger_strip_length_mm"] == 15.0
    strip = _non_pa_view(st.w, [_strip(60 * px_per_mm, 18 * px_per_mm)], {})
    assert strip.refusal[0] == "lateral_view" and strip.view == "lateral"
    assert strip.details["finger_strip_length_mm"] == 60.0 and strip.details["finger_strip_elongation"] == 3.33


def test_lateral_phantom_one_strip_lateral():
    st = run_stages(make_hand(seed=2, spacing_mm=SPACING, view="lateral")[0], SPACING, until="body")
    cluster = _best_finger_cluster(st.w, {})
    loc = _non_pa_view(st.w, cluster, {})
    assert loc.refusal[0] == "lateral_view" and loc.view == "lateral"


def test_palm_ridges_many_on_a_pa_hand_few_on_a_lateral():
    pa = run_stages(make_hand(seed=7, spacing_mm=SPACING)[0], SPACING, until="fingers")
    assert _palm_ridge_count(pa.w, pa.four) > LATERAL_MAX_RIDGES  # four metacarpals side by side
    lat = run_stages(make_hand(seed=1, spacing_mm=SPACING, view="lateral")[0], SPACING, until="body")
    cluster = _best_finger_cluster(lat.w, {})
    assert _palm_ridge_count(lat.w, cluster) <= LATERAL_MAX_RIDGES  # stacked


def test_two_strips_judged_by_the_palm_ridges():
    """With two or three strips the palm decides: the PA hand's palm behind two of its fingers
    shows its metacarpals apart (oblique, not lateral); the reason is recorded."""
    pa = run_stages(make_hand(seed=7, spacing_mm=SPACING)[0], SPACING, until="fingers")
    details: dict = {}
    loc = _non_pa_view(pa.w, pa.four[1:3], details)
    assert details["palm_ridges"] > LATERAL_MAX_RIDGES
    assert loc.refusal[0] == "oblique_view" and loc.view == "oblique"


def _shafts(gaps, support=(1.0, 1.0, 1.0, 1.0)):
    return _Shafts(np.zeros((4, 2)), np.array(support, float), np.ones(4), np.array(gaps, float))


def test_shafts_overlap_when_close_uneven_or_hidden():
    d: dict = {}
    assert not _shafts_overlap(_shafts([1.0, 0.9, 0.8]), d)
    assert d["shaft_gap_ratio"] == 1.25
    assert _shafts_overlap(_shafts([1.0, 0.3, 0.8]), d)  # two shafts nearly on top of each other
    assert _shafts_overlap(_shafts([1.5, 0.6, 0.8]), d)  # gaps 2.5x uneven: a rotated hand's crowding
    assert not _shafts_overlap(_shafts([1.0, 0.9, 0.8], support=(1.0, 1.0, 1.0, 0.1)), d)  # V does not count
    assert _shafts_overlap(_shafts([1.0, 0.9, 0.8], support=(0.6, 1.0, 1.0, 1.0)), d)  # II hidden
    # A shaft whose ridge is broken by metal over it is not taken for a hidden one.
    assert not _shafts_overlap(_shafts([1.0, 0.9, 0.8], support=(1.0, 0.5, 1.0, 1.0)), d, exclude={"III"})


def test_strips_running_out_of_the_field_or_a_body_part_many_hands_large_are_no_hand():
    st = run_stages(make_hand(seed=1, spacing_mm=SPACING)[0], SPACING, until="body")
    px_per_mm = 1.0 / st.w.spacing_mm
    # Two finger strips, one tip at the image's top edge: cut by the field, no whole hand to judge.
    strips = [_strip(60 * px_per_mm, 18 * px_per_mm, base=(60 * px_per_mm, 100.0)),
              _strip(40 * px_per_mm, 18 * px_per_mm, base=(300.0, 200.0))]
    cut = _non_pa_view(st.w, strips, {})
    assert cut.refusal[0] == "not_pa_hand" and cut.details["fingers_cut_by_field"]
    # One strip is a lateral view's stacked fingers even where it is cut.
    assert _non_pa_view(st.w, strips[:1], {}).refusal[0] == "lateral_view"
    # A "finger" so narrow that the body is over 300 of its squared widths: a chest or an arm's lobe.
    thin = _non_pa_view(st.w, [_strip(60 * px_per_mm, 2 * px_per_mm)], {})
    assert thin.refusal[0] == "not_pa_hand" and thin.details["body_finger_areas"] > 300


def _pointing(angle_deg, base_col):
    """A 50-pixel finger strip leaving (300, base_col) at ``angle_deg`` from 'up' (working pixels)."""
    a = np.radians(angle_deg)
    base = np.array([300.0, base_col])
    return _Finger(base, base + 50.0 * np.array([-np.cos(a), np.sin(a)]), 50.0, 10.0, 500, 1)


def test_a_finger_far_off_the_others_is_not_pa_spread_fingers_are():
    up = np.array([-1.0, 0.0])
    spread = [_pointing(a, c) for a, c in ((-22, 100), (-6, 120), (6, 140), (22, 160))]
    details: dict = {}
    assert not _fingers_not_parallel(spread, up, details)
    assert details["finger_angle_max_deg"] == 22.0
    curled = spread[:3] + [_pointing(MAX_FINGER_ANGLE_DEG + 8, 160)]
    assert _fingers_not_parallel(curled, up, details)
    assert details["finger_angle_max_deg"] == MAX_FINGER_ANGLE_DEG + 8


def test_phantom_hands_with_fingers_spread_or_together_stay_pa():
    for spread_deg in (-4.0, 8.0):
        image, _truth = make_hand(seed=3, spacing_mm=SPACING, finger_spread_deg=spread_deg)
        loc = locate_hand(image, SPACING)
        assert loc.refusal is None and loc.view == "PA"
        assert loc.details["finger_angle_max_deg"] <= MAX_FINGER_ANGLE_DEG


def test_fingers_far_apart_are_oblique_but_not_a_whole_hand_when_they_run_out_of_the_field():
    # 18 degrees more per finger: the little finger leaves 40 degrees off the others.
    whole, _ = make_hand(seed=2, spacing_mm=SPACING, finger_spread_deg=18.0, field_mm=(300, 300))
    loc = locate_hand(whole, SPACING)
    assert loc.refusal[0] == "oblique_view" and loc.details["finger_angle_max_deg"] > MAX_FINGER_ANGLE_DEG
    # The same hand on the usual 240 x 180 mm field: the spread fingers run out of it.
    cut, _ = make_hand(seed=2, spacing_mm=SPACING, finger_spread_deg=18.0)
    loc = locate_hand(cut, SPACING)
    assert loc.refusal[0] == "not_pa_hand" and loc.details["fingers_cut_by_field"]


def test_a_body_along_three_sides_of_the_field_is_no_hand():
    """A hand with its forearm enters the field from one side (its fingers may reach a second);
    a trunk or an arm beside it lies along three. Sides of the exposed field, not of the image:
    an unexposed band moves the side."""
    from dataclasses import replace

    from analysis.locate.view import FIELD_SIDE_CONTACT_MIN, _field_sides_touched, _no_whole_hand

    st = run_stages(make_hand(seed=1, spacing_mm=SPACING)[0], SPACING, until="body")
    w = st.w
    rows, cols = w.body.shape
    assert _field_sides_touched(w) <= 2  # the phantom hand and forearm
    trunk = np.zeros_like(w.body)
    trunk[:, : cols // 2] = True  # top, bottom and left side, over half of each
    assert _field_sides_touched(replace(w, body=trunk)) == 3
    banded = replace(w, body=trunk, bands=np.zeros_like(w.body))
    banded.bands[:, : cols // 4] = True  # the left quarter unexposed: the left side moves inwards
    assert _field_sides_touched(banded) == 3
    banded.body[:, cols // 4 : cols // 4 + 5] = False  # off the moved side: two sides left
    assert _field_sides_touched(banded) == 2
    corner = np.zeros_like(w.body)
    corner[: int(rows * FIELD_SIDE_CONTACT_MIN * 0.8), : int(cols * FIELD_SIDE_CONTACT_MIN * 0.8)] = True
    assert _field_sides_touched(replace(w, body=corner)) == 0  # under the share on both sides it touches
    strips = [_strip(60 / w.spacing_mm, 18 / w.spacing_mm, base=(300.0, col)) for col in (100.0, 200.0)]
    details: dict = {}
    loc = _no_whole_hand(replace(w, body=trunk), strips, details)
    assert loc is not None and loc.refusal[0] == "not_pa_hand" and details["field_sides_touched"] == 3
