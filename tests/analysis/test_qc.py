"""analysis.qc: foreign material over a metacarpal's measurement region."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.qc import FOREIGN_FRACTION_MAX, foreign_object_fraction, has_foreign_object
from tests.phantom import make_hand

SPACING = 0.15


@pytest.fixture(scope="module")
def metal_over_iii():
    return make_hand(seed=21, spacing_mm=SPACING, metal_over="III")


def _eight_bit(image):
    lo, hi = np.percentile(image, [1, 99.5])
    return np.round(np.clip((image - lo) / (hi - lo), 0, 1) * 255.0)


def test_clean_shafts_have_no_foreign_object(metal_over_iii):
    image, truth = metal_over_iii
    for name in ("II", "IV"):
        axis = truth.axis(name)
        # The plate juts 2 mm beyond III towards II: none of it may count against II.
        assert foreign_object_fraction(image, axis.base_rc, axis.head_rc, SPACING) == 0.0
        assert not has_foreign_object(image, axis.base_rc, axis.head_rc, SPACING)


def test_metal_plate_is_found(metal_over_iii):
    image, truth = metal_over_iii
    axis = truth.axis("III")
    assert foreign_object_fraction(image, axis.base_rc, axis.head_rc, SPACING) > 3 * FOREIGN_FRACTION_MAX
    assert has_foreign_object(image, axis.base_rc, axis.head_rc, SPACING)


def test_metal_clipped_in_an_8_bit_export_is_found(metal_over_iii):
    image, truth = metal_over_iii
    clipped = _eight_bit(image)
    assert clipped.max() == 255.0
    axis = truth.axis("III")
    assert has_foreign_object(clipped, axis.base_rc, axis.head_rc, SPACING)
    axis = truth.axis("II")
    assert not has_foreign_object(clipped, axis.base_rc, axis.head_rc, SPACING)


def test_bright_bone_clipped_with_the_rest_is_not_foreign():
    """A hard window that clips the cortex everywhere is not metal: the reference clips too."""
    image, truth = make_hand(seed=22, spacing_mm=SPACING)
    lo, hi = np.percentile(image, [1, 90])
    clipped = np.round(np.clip((image - lo) / (hi - lo), 0, 1) * 255.0)
    for name in ("II", "III", "IV"):
        axis = truth.axis(name)
        assert not has_foreign_object(clipped, axis.base_rc, axis.head_rc, SPACING)


def test_degenerate_axis_is_not_foreign():
    image = np.zeros((50, 50))
    assert foreign_object_fraction(image, (10.0, 10.0), (10.0, 11.0), 0.1) == 0.0


@pytest.mark.parametrize("seed", [0, 3, 6])
def test_plate_over_iii_does_not_leak_to_ii_at_0_1_mm(seed):
    """At 0.1 mm the checked region of II (+-0.12 L) reaches the plate over III; it is not II's."""
    image, truth = make_hand(seed=seed, spacing_mm=0.1, metal_over="III", field_mm=(150.0, 130.0))
    fractions = {n: foreign_object_fraction(image, truth.axis(n).base_rc, truth.axis(n).head_rc, 0.1)
                 for n in ("II", "III", "IV")}
    assert fractions["II"] == fractions["IV"] == 0.0, fractions
    assert fractions["III"] > 3 * FOREIGN_FRACTION_MAX, fractions


def test_plate_over_ii_is_found():
    image, truth = make_hand(seed=4, spacing_mm=SPACING, metal_over="II")
    axis = truth.axis("II")
    assert has_foreign_object(image, axis.base_rc, axis.head_rc, SPACING)
    axis = truth.axis("IV")
    assert not has_foreign_object(image, axis.base_rc, axis.head_rc, SPACING)
