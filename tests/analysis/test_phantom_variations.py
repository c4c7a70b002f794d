"""The phantom's film variations (issue 10.3) do to the image what their docstrings say.

These test the generator only (coarse 0.4-0.5 mm images, a few seconds in all); how well the
hand finder copes with them is a report (bench/stress_run.py), never a test here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.phantom import DISPLAY_CURVES, make_hand

SP = 0.5  # mm: coarse and fast


def _seg_dist_mm(points, a, b, spacing):
    """Distances (mm) from ``(N, 2)`` pixel points to the segment a-b, all ``(col, row)``."""
    points = np.atleast_2d(np.asarray(points, float))
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a
    t = np.clip(((points - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.hypot(*(points - (a + t[:, None] * ab)).T) * spacing


def _value_at(image, pt):
    c, r = pt
    return float(image[int(round(r)), int(round(c))])


def test_defaults_are_the_old_image():
    """Every new parameter at its default leaves the image and the truth exactly as before."""
    a, ta = make_hand(seed=4, spacing_mm=SP)
    b, tb = make_hand(seed=4, spacing_mm=SP, soft_tissue_scale=1.0, finger_spread_deg=0.0, thumb_angle_deg=None,
                      rings=(), wrist_metal=None, second_hand_mm=None, side_marker=None, text_label=False,
                      collimator=None, display=None)
    assert np.array_equal(a, b)
    assert ta.bones == tb.bones and tb.extras == {}


# ----------------------------------------------------------------------------- collimator
def test_white_collimator_bands_are_flat_at_the_maximum_and_pad_the_field():
    plain, tp = make_hand(seed=1, spacing_mm=SP)
    img, t = make_hand(seed=1, spacing_mm=SP, collimator="white", collimator_mm=(20.0, 0.0, 15.0, 10.0))
    top, left, right = 40, 30, 20  # px at 0.5 mm
    assert img.shape == (plain.shape[0] + top, plain.shape[1] + left + right) == t.shape
    assert t.extras["field_px"] == (top, top + plain.shape[0], left, left + plain.shape[1])
    top_band, left_band, right_band = img[:top], img[:, :left], img[:, -right:]
    for band in (top_band, left_band, right_band):
        assert np.ptp(band) == 0.0 and band.max() == img.max()
    assert img[-1].min() < img.max()  # the bottom side is open
    # The exposed field is the plain image, and the truth moved with it.
    assert np.array_equal(img[top:, left:-right], plain)
    for name, b in t.bones.items():
        assert b.base_px == pytest.approx((tp.bones[name].base_px[0] + left, tp.bones[name].base_px[1] + top))


def test_black_collimator_bands_are_flat_at_the_minimum():
    img, t = make_hand(seed=2, spacing_mm=SP, collimator="black", collimator_mm=12.0)
    r0, r1, c0, c1 = t.extras["field_px"]
    assert (r0, img.shape[0] - r1, c0, img.shape[1] - c1) == (24, 24, 24, 24)
    mask = np.ones(img.shape, bool)
    mask[r0:r1, c0:c1] = False
    assert np.ptp(img[mask]) == 0.0 and img[mask][0] == img.min()


def test_white_band_saturates_the_display():
    img, t = make_hand(seed=2, spacing_mm=SP, collimator="white", collimator_mm=(0, 10, 0, 0), display="sigmoid")
    assert np.all(img[t.extras["field_px"][1]:] == 4095.0)


# ----------------------------------------------------------------------------- display curves
@pytest.mark.parametrize("curve", [c for c in DISPLAY_CURVES if c != "edge8"] + ["gamma:1.8"])
def test_display_curves_are_monotonic_12_bit(curve):
    raw, _ = make_hand(seed=3, spacing_mm=SP)
    img, t = make_hand(seed=3, spacing_mm=SP, display=curve)
    assert img.shape == raw.shape and t.extras["display"] == curve
    assert img.min() >= 0 and img.max() <= 4095 and np.array_equal(img, np.round(img))
    order = np.argsort(raw, axis=None, kind="stable")
    assert np.all(np.diff(img.ravel()[order]) >= 0)  # a monotonic mapping of the log image
    assert len(np.unique(img)) > 200  # not a posterised image
    bone = _value_at(img, t.bones["III"].mid_px)
    assert bone > np.median(img)  # bone stays bright


def test_display_curves_differ():
    imgs = {c: make_hand(seed=3, spacing_mm=SP, display=c)[0] for c in ("linear", "log", "gamma", "equalized")}
    means = {c: float(im.mean()) for c, im in imgs.items()}
    assert len({round(m) for m in means.values()}) == 4
    assert means["gamma"] > means["log"]  # gamma 0.5 lifts the greys


def test_edge8_is_8_bit_and_enhances_edges():
    log, t = make_hand(seed=3, spacing_mm=SP, display="log")
    img, _ = make_hand(seed=3, spacing_mm=SP, display="edge8")
    assert img.min() >= 0 and img.max() <= 255 and np.array_equal(img, np.round(img))
    assert img.max() == 255 and len(np.unique(img)) > 50
    # Unsharp masking: a profile across III's mid-shaft overshoots relative to the plain curve.
    c, r = (int(round(x)) for x in t.bones["III"].mid_px)
    prof_e = img[r, c - 20:c + 21] / 255.0
    prof_l = log[r, c - 20:c + 21] / 4095.0
    assert np.ptp(prof_e) > np.ptp(prof_l)


def test_unknown_display_or_fingers_raise():
    with pytest.raises(ValueError):
        make_hand(spacing_mm=SP, display="vivid")
    with pytest.raises(ValueError):
        make_hand(spacing_mm=SP, fingers="sideways")


# ----------------------------------------------------------------------------- rotation, fingers
def _ccw(vec_cr, angle_deg):
    """Rotate a (col, row) vector counter-clockwise on the display (rows point down)."""
    a = math.radians(angle_deg)
    x, y = vec_cr[0], -vec_cr[1]
    return (x * math.cos(a) - y * math.sin(a), -(x * math.sin(a) + y * math.cos(a)))


@pytest.mark.parametrize("angle", [-180.0, -90.0, 45.0, 135.0, 180.0])
def test_truth_axes_rotate_with_the_image(angle):
    field = (260.0, 260.0)
    _, t0 = make_hand(seed=5, spacing_mm=SP, field_mm=field, noise=0.0)
    img, t = make_hand(seed=5, spacing_mm=SP, field_mm=field, noise=0.0, rotation_deg=angle)
    centre = ((img.shape[1] - 1) / 2, (img.shape[0] - 1) / 2)
    for name in ("II", "III", "IV"):
        for end in ("base_px", "head_px"):
            p0 = getattr(t0.bones[name], end)
            expect = _ccw((p0[0] - centre[0], p0[1] - centre[1]), angle)
            got = getattr(t.bones[name], end)
            assert got == pytest.approx((expect[0] + centre[0], expect[1] + centre[1]), abs=1e-6)
        # ... and the image has the bone where the truth says: the shaft is brighter than the
        # soft tissue 6 mm beside it.
        b = t.bones[name]
        d = np.subtract(b.head_px, b.base_px)
        n = np.array([-d[1], d[0]]) / np.hypot(*d)
        mid = np.array(b.mid_px)
        assert _value_at(img, mid) > _value_at(img, mid + n * 6.0 / SP) + 0.3


def test_rotation_180_is_fingers_down_and_sideways_is_90():
    down, td = make_hand(seed=6, spacing_mm=SP, fingers="down")
    rot, tr = make_hand(seed=6, spacing_mm=SP, rotation_deg=180.0)
    assert np.array_equal(down, rot) and td.bones == tr.bones
    _, tm = make_hand(seed=6, spacing_mm=SP, rotation_deg=-180.0)
    for name, b in tm.bones.items():
        assert b.head_px == pytest.approx(tr.bones[name].head_px, abs=1e-6)
    for fingers, angle in (("left", 90.0), ("right", -90.0)):
        img, tf = make_hand(seed=6, spacing_mm=SP, fingers=fingers, field_mm=(180.0, 240.0))
        _, ta = make_hand(seed=6, spacing_mm=SP, rotation_deg=angle, field_mm=(180.0, 240.0))
        assert img.shape == (360, 480)
        for name, b in tf.bones.items():
            assert b.head_px == pytest.approx(ta.bones[name].head_px, abs=1e-6)
        iii = tf.bones["III"]
        along = iii.head_px[0] - iii.base_px[0]
        assert (along < 0) if fingers == "left" else (along > 0)
        assert abs(iii.head_px[1] - iii.base_px[1]) < 0.25 * abs(along)


# ----------------------------------------------------------------------------- pixel spacing
@pytest.mark.parametrize("spacing", [0.05, 0.08, 0.15, 0.2])
def test_spacing_keeps_mm_and_scales_pixels(spacing):
    # A 24 x 24 mm field around the III shaft keeps 0.05 mm cheap (480 x 480 px).
    field = (24.0, 24.0)
    img, t = make_hand(seed=7, spacing_mm=spacing, field_mm=field, shift_mm=(0.0, -15.0))
    _, ref = make_hand(seed=7, spacing_mm=0.2, field_mm=field, shift_mm=(0.0, -15.0))
    assert img.shape == (round(24 / spacing), round(24 / spacing))
    for name in ("II", "III", "IV"):
        b = t.bones[name]
        assert b.length_mm == ref.bones[name].length_mm
        assert b.cortical_thickness_mm == ref.bones[name].cortical_thickness_mm
        assert math.hypot(b.head_px[0] - b.base_px[0], b.head_px[1] - b.base_px[1]) * spacing == \
            pytest.approx(b.length_mm)
    # The III shaft (in the field) is bright over its true width and dark 6 mm off the axis.
    b = t.bones["III"]
    d = np.subtract(b.head_px, b.base_px) / math.hypot(*np.subtract(b.head_px, b.base_px))
    n = np.array([-d[1], d[0]])
    p = np.array(b.mid_px)
    assert 0 <= p[1] < img.shape[0]
    on = _value_at(img, p + n * 0.5 * b.outer_width_mm / spacing * 0.5)
    off = _value_at(img, p + n * 6.0 / spacing)
    assert on > off + 0.3


# ----------------------------------------------------------------------------- metal
def test_rings_sit_on_proximal_phalanges_not_on_the_metacarpals():
    img, t = make_hand(seed=8, spacing_mm=SP, rings=("II", "IV"))
    plain, _ = make_hand(seed=8, spacing_mm=SP)
    metal = np.argwhere(img > plain.max() + 1.0)[:, ::-1]  # (col, row) pixels far above any bone
    assert len(metal) > 20
    for name, centre in t.extras["rings_px"].items():
        b = t.bones[name]
        head = np.array(b.head_px)
        direction = (head - np.array(b.base_px)) / math.hypot(*np.subtract(b.head_px, b.base_px))
        offset = (np.array(centre) - head) * SP
        along = offset @ direction
        assert 12.0 < along < 35.0  # beyond the MCP joint, on the proximal phalanx
        near = np.hypot(*(metal - np.array(centre)).T) * SP < 12.0
        assert near.any()
    # No metal within 5 mm of the middle 60 % of any of II-IV.
    for name in ("II", "III", "IV"):
        b = t.bones[name]
        a = np.array(b.base_px) + 0.2 * np.subtract(b.head_px, b.base_px)
        e = np.array(b.base_px) + 0.8 * np.subtract(b.head_px, b.base_px)
        assert _seg_dist_mm(metal, a, e, SP).min() > 5.0 + b.outer_width_mm / 2


@pytest.mark.parametrize("kind", ["bracelet", "watch"])
def test_wrist_metal_is_on_the_forearm(kind):
    img, t = make_hand(seed=9, spacing_mm=SP, wrist_metal=kind)
    plain, _ = make_hand(seed=9, spacing_mm=SP)
    metal = np.argwhere(img > plain.max() + 1.0)[:, ::-1]
    assert len(metal) > (50 if kind == "bracelet" else 500)
    centre = np.array(t.extras["wrist_metal_px"])
    assert np.hypot(*(metal - centre).T).max() * SP < 45.0
    for b in t.bones.values():  # proximal to every metacarpal base
        assert _seg_dist_mm(metal, b.base_px, b.head_px, SP).min() > 10.0


# ----------------------------------------------------------------------------- markers
def test_markers_only_change_their_own_corners():
    plain, _ = make_hand(seed=10, spacing_mm=SP, display="log")
    img, t = make_hand(seed=10, spacing_mm=SP, display="log", side_marker="R", text_label=True)
    (lr0, lr1, lc0, lc1), (tr0, tr1, tc0, tc1) = t.extras["markers_px"]
    changed = img != plain
    inside = np.zeros(img.shape, bool)
    for r0, r1, c0, c1 in t.extras["markers_px"]:
        inside[max(r0 - 3, 0):r1 + 3, max(c0 - 3, 0):c1 + 3] = True  # + the 0.1 mm PSF
    assert changed.any() and not changed[~inside].any()
    assert (img[lr0:lr1, lc0:lc1] == 4095).sum() > 50  # the lead letter saturates
    label = img[tr0:tr1, tc0:tc1]
    assert 0.2 < (label == 4095).mean() < 0.6  # burned-in text at the maximum grey value
    # Both lie on empty film, away from the hand.
    raw, _ = make_hand(seed=10, spacing_mm=SP)
    for r0, r1, c0, c1 in t.extras["markers_px"]:
        assert raw[r0:r1, c0:c1].max() < 0.1
    # Different corners.
    assert not (lr0 < tr1 and tr0 < lr1 and lc0 < tc1 and tc0 < lc1)


# ----------------------------------------------------------------------------- two hands
def test_two_hands_truth_is_the_complete_first_hand():
    field, shift = (240.0, 360.0), (85.0, 0.0)
    one, t1 = make_hand(seed=11, spacing_mm=SP, field_mm=field, shift_mm=shift)
    two, t2 = make_hand(seed=11, spacing_mm=SP, field_mm=field, shift_mm=shift, second_hand_mm=-170.0)
    assert t2.bones == t1.bones
    other = t2.extras["second_hand_bones"]
    for name in ("II", "III", "IV"):
        for p in (other[name].mid_px, t2.bones[name].mid_px):
            assert 0 <= p[0] < two.shape[1] and 0 <= p[1] < two.shape[0]
        # The other hand is there (bone where its truth says, empty film in the one-hand image).
        assert _value_at(two, other[name].mid_px) > 0.5 > _value_at(one, other[name].mid_px)
        assert other[name].mid_px[0] < t2.bones[name].mid_px[0] - 100.0 / SP  # 170 mm to the left
    # The other side: the thumb (I) lies on the other side of III.
    side = lambda bones: np.sign(bones["I"].head_px[0] - bones["III"].head_px[0])  # noqa: E731
    assert side(other) == -side(t2.bones)


def test_partial_second_hand_leaves_the_field():
    img, t = make_hand(seed=12, spacing_mm=SP, second_hand_mm=-110.0)
    other = t.extras["second_hand_bones"]
    inside = lambda p: 0 <= p[0] < img.shape[1] and 0 <= p[1] < img.shape[0]  # noqa: E731
    assert all(inside(b.base_px) and inside(b.head_px) for b in t.bones.values())
    assert not all(inside(b.mid_px) for b in other.values())
    assert img[:, :20].max() > 0.5  # but part of it is on the film (its little finger side)


# ----------------------------------------------------------------------------- soft tissue
def test_soft_tissue_scale_scales_the_tissue_line_integral():
    kw = dict(seed=13, spacing_mm=SP, noise=0.0, blur_sigma_mm=0.0)
    base, _ = make_hand(**kw)
    faint, _ = make_hand(**kw, soft_tissue_scale=0.3)
    strong, _ = make_hand(**kw, soft_tissue_scale=1.8)
    tissue = (base - faint) / 0.7
    assert tissue.max() > 0.4  # ~ 26 mm of palm
    assert np.allclose(strong - base, 0.8 * tissue, atol=1e-9)
    assert (tissue > -1e-9).all()


# ----------------------------------------------------------------------------- fingers, thumb
def _tissue_extent_mm(img, row):
    cols = np.flatnonzero(img[row] > 0.1)
    return (cols.max() - cols.min()) * SP if len(cols) else 0.0


def test_finger_spread_moves_fingers_not_metacarpals():
    kw = dict(seed=14, spacing_mm=SP, noise=0.0)
    base, tb = make_hand(**kw)
    together, tt = make_hand(**kw, finger_spread_deg=-4.0)
    spread, ts = make_hand(**kw, finger_spread_deg=8.0)
    assert tt.bones == tb.bones == ts.bones
    row = int(round(min(b.head_px[1] for b in tb.bones.values()) - 40.0 / SP))  # 40 mm beyond the heads
    w = [_tissue_extent_mm(im, row) for im in (together, base, spread)]
    assert w[0] < w[1] < w[2]


@pytest.mark.parametrize("angle", [15.0, 50.0])
def test_thumb_angle(angle):
    _, t = make_hand(seed=15, spacing_mm=SP, thumb_angle_deg=angle, noise=0.0)
    _, t0 = make_hand(seed=15, spacing_mm=SP, noise=0.0)
    b = t.bones["I"]
    # Left hand, fingers up: the thumb leans to the image right, the angle measured from vertical.
    got = math.degrees(math.atan2(b.head_px[0] - b.base_px[0], b.base_px[1] - b.head_px[1]))
    assert got == pytest.approx(angle, abs=0.01)
    assert {k: v for k, v in t.bones.items() if k != "I"} == {k: v for k, v in t0.bones.items() if k != "I"}
