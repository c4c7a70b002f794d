"""Stage 2 of analysis.locate (analysis/locate/fingers.py): fingers, hand size, thumb, hand axis."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.locate.fingers import _complete_fingers, _Finger, _finger_cluster, _open_disk, _thumb_and_axis
from tests.analysis.locate_stages import run_stages
from tests.phantom import make_hand

SPACING = 0.2  # mm


def _finger(base, direction=(-1.0, 0.0), length=60.0, width=10.0):
    base = np.asarray(base, float)
    return _Finger(base, base + length * np.asarray(direction), length, width, int(length * width), 1)


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_five_fingers_and_the_thumb_on_its_side(laterality):
    """Left hand PA, fingers up: the thumb is on the image right (+col); right hand: on the left."""
    image, truth = make_hand(seed=7, spacing_mm=SPACING, laterality=laterality)
    st = run_stages(image, SPACING, until="fingers")
    assert len(st.cluster) == 5
    assert st.details["thumb_from"] == "finger" and st.thumb is not None
    side = 1.0 if laterality == "L" else -1.0
    assert st.u[0] < -0.95  # wrist -> fingers points up the image
    assert side * st.v[1] > 0.95  # towards the thumb
    # The thumb found leaves the palm near metacarpal I's head (working pixels scaled to the image's).
    thumb_rc = st.thumb.base_rc * st.w.factor
    assert np.hypot(*(thumb_rc - np.asarray(truth.axis("I").head_rc))) * SPACING < 10.0
    # II-V ordered from the thumb side, each finger base further from it.
    cols = [f.base_rc[1] for f in st.four]
    assert np.all(side * np.diff(cols) < 0)
    # ... and each is the finger over its own metacarpal's head.
    for f, name in zip(st.four, ("II", "III", "IV", "V")):
        head_col = truth.axis(name).head_rc[1] * 1.0 / st.w.factor
        others = [abs(truth.axis(n).head_rc[1] / st.w.factor - f.base_rc[1]) for n in ("II", "III", "IV", "V")]
        assert abs(head_col - f.base_rc[1]) == pytest.approx(min(others))


def test_fingers_pointing_down_give_the_axis_down():
    image, _ = make_hand(seed=3, spacing_mm=SPACING, fingers="down", laterality="R")
    st = run_stages(image, SPACING, until="fingers")
    assert len(st.cluster) == 5 and st.u[0] > 0.95
    # A right hand seen with the fingers down has its thumb on the image right.
    assert st.v[1] > 0.95


def test_finger_spacing_is_a_hand_scale_in_mm():
    image, _ = make_hand(seed=1, spacing_mm=SPACING)
    st = run_stages(image, SPACING, until="fingers")
    assert 12.0 < st.details["finger_spacing_mm"] < 30.0
    assert st.details["finger_spacing_mm"] == pytest.approx(st.s * st.w.spacing_mm, abs=0.05)
    assert st.details["hand_scale"] == 1.0  # the nominal size shows the phantom's fingers


def test_hand_looking_large_found_at_a_larger_scale():
    """A spacing claimed 1.5 x too large makes the hand 1.5 x larger in mm: its fingers are wider
    than every nominal opening radius; the 1.4 x hand scale still finds all five."""
    image, _ = make_hand(seed=1, spacing_mm=SPACING)
    st = run_stages(image, SPACING * 1.5, until="fingers")
    assert len(st.cluster) == 5
    assert st.details["hand_scale"] == 1.4 and st.details["finger_radius_mm"] > 13.0


def test_lateral_view_shows_one_finger_strip():
    image, _ = make_hand(seed=1, spacing_mm=SPACING, view="lateral")
    st = run_stages(image, SPACING, until="body")
    from analysis.locate.fingers import _best_finger_cluster

    assert len(_best_finger_cluster(st.w, {})) == 1


def test_open_disk_removes_a_thin_strip_and_keeps_the_disk():
    yy, xx = np.mgrid[0:80, 0:80]
    mask = (yy - 50) ** 2 + (xx - 40) ** 2 < 20**2
    mask[5:35, 38:43] = True  # a 5-pixel finger on a 40-pixel palm
    opened = _open_disk(mask, 6.0)
    assert opened[50, 40] and opened[50, 25]
    assert not opened[10:28, 38:43].any()


def test_thumb_found_far_proximal_on_either_side():
    for side in (1.0, -1.0):
        fingers = [_finger((100, 100 + side * c)) for c in (0, 20, 40, 60)]
        thumb = _finger((160, 100 + side * 95), direction=(-0.7, side * 0.7), length=45)
        u, v, ordered, info = _thumb_and_axis(fingers + [thumb], np.ones((300, 300), bool))
        assert info["thumb_from"] == "finger" and ordered[0] is thumb
        assert u == pytest.approx([-1.0, 0.0], abs=1e-6) and v[1] == pytest.approx(side)
        assert [f.base_rc[1] for f in ordered[1:]] == [100 + side * c for c in (60, 40, 20, 0)]


def test_finger_cluster_drops_a_protrusion_pointing_elsewhere():
    fingers = [_finger((100, c)) for c in (100, 120, 140, 160)]
    bracelet_end = _finger((250, 130), direction=(1.0, 0.0), length=40)  # points to the wrist
    cluster = _finger_cluster(fingers + [bracelet_end])
    assert bracelet_end not in cluster and len(cluster) == 4


def test_complete_fingers_keeps_the_thumb_side_order():
    v = np.array([0.0, -1.0])  # thumb towards -col
    three = [_finger((100, 100)), _finger((100, 120)), _finger((100, 160))]
    four = _complete_fingers(three, v)
    assert [f.base_rc[1] for f in four] == pytest.approx([100, 120, 140, 160])
    assert four[2].label == -1  # the predicted one
