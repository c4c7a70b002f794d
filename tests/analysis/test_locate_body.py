"""Stage 1 of analysis.locate (analysis/locate/body.py): working copy, collimator bands, body mask."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.locate.body import (
    MIN_HAND_AREA_MM2,
    WORK_SPACING_MM,
    _body_too_small,
    _bones_fleshed_out,
    _fill_holes,
    _otsu,
    _prepare,
    _unusable_input,
    _work_factor,
)
from analysis.locate import _locate_in, locate_hand
from tests.analysis.locate_stages import work_rc
from tests.phantom import make_hand

SPACING = 0.25  # mm: coarse, fast; the working copy is 0.5 mm either way


def _mids(truth):
    return [0.5 * (np.asarray(truth.axis(n).base_rc) + np.asarray(truth.axis(n).head_rc)) for n in ("II", "III", "IV")]


def test_working_copy_is_about_half_a_millimetre():
    image, _ = make_hand(seed=1, spacing_mm=SPACING)
    w = _prepare(image, SPACING)
    assert w.factor == 2 and w.spacing_mm == pytest.approx(WORK_SPACING_MM)
    assert w.g.shape == (image.shape[0] // 2, image.shape[1] // 2)
    assert _work_factor(0.1) == 5 and _work_factor(0.15) == 3 and _work_factor(1.0) == 1


def test_body_holds_the_metacarpals_and_not_the_air():
    image, truth = make_hand(seed=1, spacing_mm=SPACING)
    w = _prepare(image, SPACING)
    for mid in _mids(truth):
        assert w.body[work_rc(w, mid)]
    assert not w.body[0, 0] and not w.body[-1, -1] and not w.bands.any()
    assert 0.05 < w.body.mean() < 0.6


def test_white_collimator_band_is_masked_and_not_body():
    image, truth = make_hand(seed=20, spacing_mm=SPACING, collimator="white", collimator_mm=(20, 0, 15, 15))
    r0, r1, c0, c1 = truth.extras["field_px"]
    w = _prepare(image, SPACING)
    f = w.factor
    top, left, right = w.bands[: r0 // f - 1], w.bands[:, : c0 // f - 1], w.bands[:, c1 // f + 1 :]
    assert top.mean() > 0.95 and left.mean() > 0.95 and right.mean() > 0.95
    inner = w.bands[r0 // f + 10 : r1 // f - 10, c0 // f + 10 : c1 // f - 10]
    assert inner.mean() < 0.01  # the exposed field is not a band
    assert not (w.body & w.bands).any()
    for mid in _mids(truth):
        assert w.body[work_rc(w, mid)]


def test_black_collimator_band_is_not_body():
    image, truth = make_hand(seed=21, spacing_mm=SPACING, collimator="black")
    r0, r1, c0, c1 = truth.extras["field_px"]
    w = _prepare(image, SPACING)
    f = w.factor
    # The forearm runs into the bottom band: the 0.6 mm smoothing may carry it a pixel or two in.
    outside = np.ones(w.body.shape, bool)
    outside[r0 // f - 3 : r1 // f + 3, c0 // f - 3 : c1 // f + 3] = False
    assert not (w.body & outside).any()
    # The shuttered bands are darker than air: the air must not come out as tissue above them.
    assert w.body[r0 // f : r1 // f, c0 // f : c1 // f].mean() < 0.6
    for mid in _mids(truth):
        assert w.body[work_rc(w, mid)]


def test_burned_in_letter_and_label_are_not_part_of_the_body():
    image, truth = make_hand(seed=24, spacing_mm=SPACING, side_marker="R", text_label=True)
    w = _prepare(image, SPACING)
    boxes = truth.extras["markers_px"]
    assert len(boxes) == 2
    for r0, r1, c0, c1 in boxes:
        f = w.factor
        assert not w.body[r0 // f : r1 // f + 1, c0 // f : c1 // f + 1].any()
    for mid in _mids(truth):
        assert w.body[work_rc(w, mid)]


def test_body_area_gate_in_square_mm():
    image, _ = make_hand(seed=1, spacing_mm=SPACING)
    w = _prepare(image, SPACING)
    details: dict = {}
    assert not _body_too_small(w, details)
    assert details["body_area_cm2"] == pytest.approx(w.body.sum() * 0.25 / 100.0, abs=0.05)
    w.body = np.zeros_like(w.body)
    w.body[:20, :20] = True  # 100 mm²
    assert 100.0 < MIN_HAND_AREA_MM2 and _body_too_small(w, details)


def test_unusable_inputs_are_refused():
    assert _unusable_input(np.zeros((400, 300)), 0.1) is None
    assert _unusable_input(np.zeros((10, 300)), 0.1).refusal[0] == "not_pa_hand"
    assert _unusable_input(np.zeros((40, 30, 3)), 0.1).refusal[0] == "not_pa_hand"
    assert _unusable_input(np.zeros((400, 300)), -1.0).refusal[0] == "not_pa_hand"
    assert "mm across" in _unusable_input(np.zeros((100, 100)), 0.01).refusal[1]  # 1 mm: no hand fits


def test_fill_holes_fills_enclosed_background_only():
    ring = np.zeros((30, 30), bool)
    ring[5:25, 5:25] = True
    ring[10:20, 10:20] = False  # a hole
    ring[0:3, 0:3] = False
    filled = _fill_holes(ring)
    assert filled[15, 15] and filled[10:20, 10:20].all()
    assert not filled[0, 0] and not filled[28, 28]


def test_otsu_splits_two_populations():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.03, 5000), rng.normal(0.8, 0.03, 5000)])
    t = _otsu(values)
    assert 0.25 < t < 0.75 and abs(np.count_nonzero(values > t) - 5000) <= 5


# The issue-10 films: white borders on four sides, soft tissue a third as strong, a sigmoid display
# that crushes the dark end (the fingers' soft tissue does not show), a side letter, rotation.
CRUSHED_TISSUE = dict(collimator="white", collimator_mm=(18.0, 12.0, 22.0, 15.0), soft_tissue_scale=0.3,
                      side_marker="L", display="sigmoid", spacing_mm=0.1)


def test_soft_tissue_that_does_not_show_gets_a_second_look_with_the_bones_fleshed_out():
    for seed, rotation_deg in ((14, -7.0), (16, 4.0), (17, -7.0)):
        image, truth = make_hand(seed=seed, rotation_deg=rotation_deg, **CRUSHED_TISSUE)
        w = _prepare(image, 0.1)
        fleshed = _bones_fleshed_out(w)
        assert fleshed is not None and np.count_nonzero(fleshed.body) > 1.3 * np.count_nonzero(w.body)
        assert _locate_in(image, 0.1, w).refusal is not None  # the first look alone finds no PA hand
        loc = locate_hand(image, 0.1)
        assert loc.refusal is None, (seed, loc.refusal)
        assert loc.details["body"] == "bones fleshed out" and loc.details["maturity"] == "adult"
        for name in ("II", "III", "IV"):
            mid = 0.5 * (np.asarray(loc.metacarpals[name].base_rc) + np.asarray(loc.metacarpals[name].head_rc))
            true_mid = 0.5 * (np.asarray(truth.axis(name).base_rc) + np.asarray(truth.axis(name).head_rc))
            assert np.hypot(*(mid - true_mid)) * 0.1 < 4.0  # mm: on the right bone


def test_visible_soft_tissue_gets_no_second_look():
    for kwargs in ({}, {"soft_tissue_scale": 0.3}, {"display": "sigmoid"}):
        image, _ = make_hand(seed=5, spacing_mm=SPACING, **kwargs)
        assert _bones_fleshed_out(_prepare(image, SPACING)) is None, kwargs
        assert "body" not in locate_hand(image, SPACING).details
