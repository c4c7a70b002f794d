"""Stage 6 of analysis.locate (analysis/locate/maturity.py): the carpal ossification check."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.locate.maturity import CARPAL_FILL_MIN, _carpal_fill, _judge_maturity
from tests.analysis.locate_stages import run_stages
from tests.phantom import make_hand

SPACING = 0.2  # mm
NAMES = ("II", "III", "IV", "V")


def _canon(carpus_level: float, cartilage_rows=None):
    """A canonical copy: soft tissue 0.2, shafts of II-V (x = 45, 35, 25, 15) at 1.0 over rows
    10-60, the carpus (rows 55-95, x 15-50) at ``carpus_level``."""
    canon = np.full((100, 60), 0.2)
    for x in (45, 35, 25, 15):
        canon[10:60, x - 2 : x + 3] = 1.0
    canon[55:95, 15:50] = carpus_level
    if cartilage_rows is not None:
        canon[cartilage_rows[0] : cartilage_rows[1], 15:50] = 0.2
    lines = np.array([[x, 0.0] for x in (45, 35, 25, 15)])
    ends = {n: (10.0, 60.0) for n in ("II", "III", "IV")}
    return canon, lines, ends


def test_ossified_carpus_fills():
    canon, lines, ends = _canon(1.0)
    assert _carpal_fill(canon, lines, ends, NAMES) == pytest.approx(1.0)


def test_a_band_of_cartilage_is_a_childs_carpus():
    canon, lines, ends = _canon(1.0, cartilage_rows=(70, 85))
    fill = _carpal_fill(canon, lines, ends, NAMES)
    assert fill is not None and fill < CARPAL_FILL_MIN


def test_no_verdict_without_ii_to_iv_or_outside_the_field():
    canon, lines, ends = _canon(1.0)
    assert _carpal_fill(canon, lines, {"II": ends["II"], "III": ends["III"]}, NAMES) is None
    inside = np.ones(canon.shape, bool)
    inside[60:, :] = False  # the carpus beyond the field edge
    assert _carpal_fill(canon, lines, ends, NAMES, inside) is None


@pytest.mark.parametrize("skeleton, immature", [("adult", False), ("child", True)])
def test_phantom_adult_and_child(skeleton, immature):
    image, _ = make_hand(seed=10, spacing_mm=SPACING, skeleton=skeleton)
    st = run_stages(image, SPACING)
    details: dict = {}
    assert _judge_maturity(st.w, st.hand, st.shafts, st.ends, details) is immature
    assert details["maturity"] == ("immature" if immature else "adult")
    if immature:
        assert details["carpal_fill"] < CARPAL_FILL_MIN
    else:
        assert details["carpal_fill"] > 0.5
