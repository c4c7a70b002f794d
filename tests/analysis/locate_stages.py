"""Run the hand finder's stages one by one on an image (for the per-stage tests of analysis.locate)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from analysis.locate.body import _prepare
from analysis.locate.fingers import _best_finger_cluster, _finger_spacing, _number_fingers
from analysis.locate.frame import _canonical_hand
from analysis.locate.joints import _LENGTH_PER_SPACING, _trace_ends
from analysis.locate.shafts import _fit_shafts


def run_stages(image: np.ndarray, spacing_mm: float, *, until: str = "ends") -> SimpleNamespace:
    """Stages 1.. ``until`` (``body``, ``fingers``, ``shafts``, ``ends``); returns what each gave."""
    out = SimpleNamespace(details={})
    out.w = _prepare(np.asarray(image, float), spacing_mm)
    if until == "body":
        return out
    out.cluster = _best_finger_cluster(out.w, out.details)
    out.u, out.v, out.thumb, out.four = _number_fingers(out.cluster, out.w.body, out.details)
    out.s = _finger_spacing(out.four, out.v, out.w.spacing_mm, out.details)
    if until == "fingers":
        return out
    out.hand = _canonical_hand(out.w, out.four, out.u, out.v, out.s)
    out.shafts = _fit_shafts(out.hand, out.details)
    if until == "shafts":
        return out
    out.ends = _trace_ends(image, spacing_mm, out.hand, out.shafts, _LENGTH_PER_SPACING)
    return out


def work_rc(w, image_rc) -> tuple[int, int]:
    """The working pixel holding image pixel ``(row, col)``."""
    return int((image_rc[0] + 0.5) // w.factor), int((image_rc[1] + 0.5) // w.factor)
