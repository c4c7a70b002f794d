"""analysis.locate on synthetic hands (tests/phantom.py): numbering, views, refusals.

The phantom's fingers touch each other down to the palm and run out of the field, unlike the
clinical images the locator was tuned on; PA location on it does not work yet and is marked
as a strict xfail so the fix is noticed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.locate import locate_hand
from tests.phantom import make_hand, make_non_hand

SPACING = 0.1


def _mid_error_mm(loc, truth, name):
    m = loc.metacarpals[name]
    b = truth.bones[name]
    mid_c = 0.5 * (b.base_px[0] + b.head_px[0])
    mid_r = 0.5 * (b.base_px[1] + b.head_px[1])
    return math.hypot(m.mid_rc[0] - mid_r, m.mid_rc[1] - mid_c) * SPACING


@pytest.mark.xfail(strict=True, reason="phantom fingers touch to the palm: finger separation fails (see report)")
@pytest.mark.parametrize("kw", [
    dict(), dict(rotation_deg=90), dict(fingers="down", laterality="R"), dict(rotation_deg=-135, laterality="R"),
], ids=["up-L", "rot90", "down-R", "rot-135-R"])
def test_phantom_pa_located_on_ii_to_iv(kw):
    image, truth = make_hand(seed=1, spacing_mm=SPACING, **kw)
    loc = locate_hand(image, SPACING)
    assert loc.refusal is None and loc.view == "PA"
    for name in ("II", "III", "IV"):
        assert _mid_error_mm(loc, truth, name) < 4.0


def test_non_hand_phantom_refused():
    image = make_non_hand(seed=0)
    loc = locate_hand(image, 0.15)
    assert loc.refusal is not None and loc.refusal[0] == "not_pa_hand"
    assert loc.metacarpals == {}


@pytest.mark.parametrize("view", ["lateral", "oblique"])
def test_lateral_and_oblique_phantoms_refused(view):
    image, _ = make_hand(seed=2, spacing_mm=SPACING, view=view)
    loc = locate_hand(image, SPACING)
    assert loc.refusal is not None
    assert loc.metacarpals == {}


def test_blank_and_noise_images_refused():
    rng = np.random.default_rng(0)
    assert locate_hand(np.zeros((400, 300)), 0.1).refusal[0] == "not_pa_hand"
    assert locate_hand(rng.normal(size=(400, 300)), 0.1).refusal is not None


def test_bad_input_refused_not_raised():
    assert locate_hand(np.zeros((5, 5)), 0.1).refusal is not None
    assert locate_hand(np.zeros((100, 100, 3)), 0.1).refusal is not None
    assert locate_hand(np.ones((200, 200)), float("nan")).refusal is not None
