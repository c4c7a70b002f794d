"""Stage 7 of analysis.locate (analysis/locate/checks.py): metal over a shaft, bones cut by the field."""

from __future__ import annotations

import numpy as np

from analysis.locate.checks import _cut_by_field, _metal_along_shafts, _metal_under
from analysis.locate.joints import _axis_of
from tests.analysis.locate_stages import run_stages
from tests.phantom import make_hand

SPACING = 0.2  # mm


def _axes(st, spacing=SPACING):
    return {n: _axis_of(st.hand, st.shafts, n, *st.ends[n], spacing) for n in st.ends}


def test_metal_plate_over_iii_flagged_on_iii_only():
    image, _ = make_hand(seed=9, spacing_mm=SPACING, metal_over="III")
    st = run_stages(image, SPACING)
    details: dict = {}
    suspect = _metal_along_shafts(st.hand, st.shafts, details)
    under = _metal_under(image, SPACING, st.hand, st.shafts, st.ends, float(image.max()))
    assert (suspect | under) - {"V"} == {"III"}
    assert details["metal_suspect"] == sorted(suspect)


def test_no_metal_on_a_plain_hand():
    image, _ = make_hand(seed=1, spacing_mm=SPACING)
    st = run_stages(image, SPACING)
    assert _metal_along_shafts(st.hand, st.shafts, {}) == set()
    assert _metal_under(image, SPACING, st.hand, st.shafts, st.ends, float(image.max())) == set()


def test_bones_in_the_field_are_not_cut_and_a_crop_cuts_them():
    image, _ = make_hand(seed=12, spacing_mm=SPACING)
    st = run_stages(image, SPACING)
    found = _axes(st)
    assert _cut_by_field(found, image.shape, st.w, st.s, SPACING) == []
    # The same axes on an image that ends 10 mm proximal to III's head: III's base is outside.
    rows = int(found["III"].head_rc[0] + 10 / SPACING)
    cut = _cut_by_field(found, (rows, image.shape[1]), st.w, st.s, SPACING)
    assert "III" in cut
    # An end far off the hand (in the air beside it) is cut too.
    off = dict(found)
    ax = found["II"]
    off["II"] = type(ax)("II", (ax.base_rc[0], 3.0 / SPACING), ax.head_rc, ax.length_mm)
    assert _cut_by_field(off, image.shape, st.w, st.s, SPACING) == ["II"]
