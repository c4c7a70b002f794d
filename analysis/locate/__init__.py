"""Find the hand, its view, and the axes of metacarpals I-V on a hand radiograph.

The search runs on a downsampled copy (about 0.5 mm per pixel) and maps its answer back to
the pixels of the image it was given. :func:`locate_hand` runs the stages in order; each module
holds one stage with its tuning constants:

1. :mod:`~analysis.locate.body`: unexposed (collimated) bands along the edges are masked out, the
   background level is modelled as a smooth surface and everything clearly above it is tissue;
   the largest connected piece of tissue is the body part (burned-in markers and logos are
   small, separate pieces and drop out).
2. :mod:`~analysis.locate.fingers`: fingers are the parts of the body mask that a morphological
   opening with a disk wider than a finger removes (several hand sizes are tried). The hand's
   axis points from the palm to the fingers. The thumb is the finger whose base is furthest from
   the others (it leaves the hand from the side, proximal to the other four); metacarpals are
   numbered I-V from it, so a mirrored image never changes which bone is II.
3. :mod:`~analysis.locate.view`: without four fingers side by side, the view (lateral, oblique)
   or no hand at all, from the finger strips and the bone ridges across the palm.
4. :mod:`~analysis.locate.frame`, :mod:`~analysis.locate.shafts`: in a canonical frame (fingers up,
   thumb to the right, any in-plane rotation undone) the shafts of II-V are straight lines
   fitted to the peaks of a ridge filter (:mod:`~analysis.locate.ridges`), seeded where each
   finger points and re-centred on the bone signal (the ridge of a hollow tube can lock onto
   one cortex); after a shaft-based refusal, re-centred once more and checked again.
5. :mod:`~analysis.locate.joints`: along each line, on the full-resolution image, joint spaces are
   narrow dark bands between bright subchondral plates (a second-derivative filter at about
   0.4 mm). The head is the first strong one distal to mid-shaft (the MCP joint). The bases of
   II-V are placed at one common hand scale: the scale whose predicted bases fall on
   carpometacarpal joint lines of all the bones best (the first such line, not the midcarpal
   one behind it).
6. :mod:`~analysis.locate.maturity`: an unossified carpus (a young child).
7. :mod:`~analysis.locate.checks` (and :func:`~analysis.locate.view._shafts_overlap`): shafts that
   overlap (oblique), bones cut by the field edge, metal over a shaft (``analysis.qc``; that
   bone alone is refused).

Refusals (``lateral_view``, ``oblique_view``, ``not_pa_hand``, ``immature_skeleton``,
``bone_not_found``) come from what these steps find: see :func:`locate_hand`. What the finder
answers is in :mod:`~analysis.locate.location`.

Coordinates inside this package are ``(row, col)``; :mod:`analysis.result` uses ``(column, row)``.
"""

from __future__ import annotations

import numpy as np

from analysis.locate.body import (
    WORK_SPACING_MM, _body_too_small, _bones_fleshed_out, _outline, _prepare, _unusable_input, _Work,
)
from analysis.locate.checks import _cut_by_field, _metal_along_shafts, _metal_under
from analysis.locate.fingers import _best_finger_cluster, _Finger, _finger_spacing, _number_fingers
from analysis.locate.frame import _canonical_hand, _CanonicalHand
from analysis.locate.joints import _LENGTH_PER_SPACING, _axis_of, _bases_by_scale, _fine_for, _thumb_metacarpal, _trace_ends
from analysis.locate.location import METACARPAL_NAMES, HandLocation, MetacarpalAxis, _refuse
from analysis.locate.maturity import _judge_maturity
from analysis.locate.shafts import NAMES, _centred_once_more, _fit_shafts, _Shafts
from analysis.locate.view import _fingers_not_parallel, _no_whole_hand, _non_pa_view, _shafts_overlap
from analysis.result import REASON_MESSAGES

__all__ = ["HandLocation", "METACARPAL_NAMES", "MetacarpalAxis", "WORK_SPACING_MM", "locate_hand"]

SECOND_CENTRING_REASONS = ("oblique_view", "bone_not_found")
"""Refusals of a hand with four fingers after which the shaft lines are re-centred once more and
the checks run again (:func:`_centred_again`); only a PA hand that passes them all replaces the
refusal."""
SECOND_LOOK_REASONS = ("not_pa_hand", "oblique_view", "lateral_view", "bone_not_found")
"""Refusals after which the finder looks again with the bones fleshed out, when the soft tissue
did not show (:func:`~analysis.locate.body._bones_fleshed_out`)."""


def locate_hand(image_bone_bright: np.ndarray, pixel_spacing_mm: float) -> HandLocation:
    """Find the hand, decide its view, and trace the axes of metacarpals I-V.

    Parameters
    ----------
    image_bone_bright : ndarray (rows, cols)
        The radiograph with bone bright (any scale; 8-bit exports work).
    pixel_spacing_mm : float
        Pixel size in mm (used to choose the working resolution and to report lengths).

    Returns
    -------
    HandLocation
        ``refusal`` set (and ``metacarpals`` empty) when the image is not a measurable PA hand:
        ``not_pa_hand``, ``lateral_view``, ``oblique_view``, ``immature_skeleton`` or
        ``bone_not_found``. Otherwise ``view == "PA"`` and ``metacarpals`` holds at least II-IV
        (I and V when found), axes in ``(row, col)`` pixels of ``image_bone_bright``.
        ``bone_refusals`` names bones of II-IV that must not be measured (metal in the ROI).
    """
    image = np.asarray(image_bone_bright, dtype=np.float64)
    refusal = _unusable_input(image, pixel_spacing_mm)
    if refusal is not None:
        return refusal
    w = _prepare(image, pixel_spacing_mm)  # stage 1: working copy and body mask
    loc = _locate_in(image, pixel_spacing_mm, w)
    if loc.refusal is not None and loc.refusal[0] in SECOND_LOOK_REASONS:
        # Where the soft tissue does not show, the body mask is little more than the bones and
        # no fingers come out of it: look again with tissue around the bones; only a PA hand
        # found that way replaces the first answer.
        fleshed = _bones_fleshed_out(w)
        second = _locate_in(image, pixel_spacing_mm, fleshed) if fleshed is not None else None
        if second is not None and second.refusal is None:
            second.details["body"] = "bones fleshed out"
            return second
    return loc


def _locate_in(image: np.ndarray, pixel_spacing_mm: float, w: _Work) -> HandLocation:
    """Stages 2-7 on the working copy ``w`` (stage 1): what :func:`locate_hand` returns."""
    details: dict = {"working_spacing_mm": round(w.spacing_mm, 3)}
    outline = _outline(w.body, w.factor)
    if _body_too_small(w, details):
        return _refuse("not_pa_hand", "No body part large enough to be a hand was found in the image.",
                       outline_rc=outline, details=details)
    cluster = _best_finger_cluster(w, details)  # stage 2: fingers, thumb, hand axis
    four: list[_Finger] = []
    if len(cluster) >= 4:
        u, v, thumb, four = _number_fingers(cluster, w.body, details)
    if len(four) < 4:  # stage 3: not four fingers side by side
        loc = _non_pa_view(w, cluster, details)
        loc.outline_rc = outline
        return loc
    if _fingers_not_parallel(four, u, details):
        loc = _no_whole_hand(w, four, details) or _refuse(
            "oblique_view", "A finger points far away from the others (curled fingers or a turned hand): not a PA "
            "view.", view="oblique", details=details)
        loc.outline_rc = outline
        return loc
    s = _finger_spacing(four, v, w.spacing_mm, details)
    if s < 3:
        return _refuse("bone_not_found", outline_rc=outline, details=details)
    hand = _canonical_hand(w, four, u, v, s)  # stage 4: canonical frame and shaft lines
    before_shafts = dict(details)
    shafts = _fit_shafts(hand, details)
    if shafts is None:
        return _refuse("bone_not_found", outline_rc=outline, details=details)
    loc = _trace_pa_hand(image, pixel_spacing_mm, w, hand, shafts, details)  # stages 5-7
    if loc.refusal is not None and loc.refusal[0] in SECOND_CENTRING_REASONS:
        loc, details = _centred_again(image, pixel_spacing_mm, w, hand, shafts, loc, details, before_shafts)
    if loc.refusal is not None and loc.refusal[0] == "oblique_view":
        # Four strips that are no PA hand: no view to judge when they are no whole hand at all
        # (a limb running out of the field, a trunk), as without four fingers.
        loc = _no_whole_hand(w, four, details) or loc
    if loc.refusal is not None:
        loc.outline_rc = outline
        return loc
    if thumb is not None:
        axis_i = _thumb_axis(image, pixel_spacing_mm, w, thumb, s, details)
        if axis_i is not None:
            loc.metacarpals = {"I": axis_i, **loc.metacarpals}
    loc.outline_rc = outline
    loc.fingers_direction_rc = (float(u[0]), float(u[1]))
    loc.confidence = float(np.mean([loc.metacarpals[n].confidence for n in ("II", "III", "IV")]))
    return loc


def _centred_again(image: np.ndarray, pixel_spacing_mm: float, w: _Work, hand: _CanonicalHand, shafts: _Shafts,
                   loc: HandLocation, details: dict, before_shafts: dict) -> tuple[HandLocation, dict]:
    """The shaft lines ``shafts`` re-centred once more, and stages 5-7 again, after a refusal in
    SECOND_CENTRING_REASONS: ``(location, details)`` of the second try when it passes every check,
    else ``(loc, details)`` unchanged (``before_shafts``: the details as they were before the shaft
    fit). A line fitted to the ridge of one cortex here and of the other there runs across the
    shaft; one pass moves it only part of the way onto the bone."""
    again = dict(before_shafts)
    shafts = _centred_once_more(hand, shafts, again)
    second = _trace_pa_hand(image, pixel_spacing_mm, w, hand, shafts, again)
    if second.refusal is not None:
        return loc, details
    again["shaft_centring_passes"] = 2
    return second, again


def _trace_pa_hand(image: np.ndarray, pixel_spacing_mm: float, w: _Work, hand: _CanonicalHand, shafts: _Shafts,
                   details: dict) -> HandLocation:
    """Stages 5-7 on a hand whose shaft lines II-V were fitted: ends, maturity, view, hand scale,
    field and metal checks. Returns a PA HandLocation with II-IV (V when found) in image pixels,
    lengths in mm, and the bones under metal in ``bone_refusals``; or a refusal
    (``immature_skeleton``, ``oblique_view``, ``bone_not_found``). Outline, thumb, direction and
    confidence are the caller's.
    """
    metal_suspect = _metal_along_shafts(hand, shafts, details)
    image_max = float(np.max(image))  # once, not per bone and per candidate scale
    ends_by_bone = _trace_ends(image, pixel_spacing_mm, hand, shafts, _LENGTH_PER_SPACING)
    metal = _metal_under(image, pixel_spacing_mm, hand, shafts, ends_by_bone, image_max) | metal_suspect
    # Ossified carpus? Judged behind the first-pass bases.
    if _judge_maturity(w, hand, shafts, ends_by_bone, details):
        return _refuse("immature_skeleton", "The carpal bones are mostly not yet ossified (a young child's "
                       "hand): DXR-BMD is only defined for adults.", view="PA", details=details)
    if _shafts_overlap(shafts, details, exclude=metal):
        return _refuse("oblique_view", view="oblique", details=details)
    # The finger spacing predicts the bone length only to 10-30 % (it depends on the hand and on
    # how it was laid down). The carpometacarpal joint lines of II-V, however, must agree on one
    # hand scale (the bones' relative lengths are nearly fixed): try every scale, score it by
    # the joint lines found where it puts the bases, keep the best. Bones under metal do not
    # vote (the metal's edges look like joint lines).
    fines = {n: _fine_for(image, hand, shafts, NAMES.index(n), pixel_spacing_mm) for n in ends_by_bone}
    ends_by_bone = _bases_by_scale(ends_by_bone, fines, hand.s, exclude=metal, details=details)
    found = {name: _axis_of(hand, shafts, name, *ends_by_bone[name], pixel_spacing_mm)
             for name in NAMES if name in ends_by_bone}
    missing = [n for n in ("II", "III", "IV") if n not in found]
    if missing:
        return _refuse("bone_not_found", f"Metacarpal {', '.join(missing)} could not be traced.",
                       view="PA", details=details)
    # Every measured bone must lie wholly in the field: both ends inside the image and on the hand.
    cut = _cut_by_field(found, image.shape, w, hand.s, pixel_spacing_mm)
    if cut:
        details["cut_by_field"] = cut
        return _refuse("bone_not_found", f"Metacarpal {', '.join(cut)} is not wholly inside the image.",
                       view="PA", details=details)
    bone_refusals = {
        n: ("foreign_object_in_roi", REASON_MESSAGES["foreign_object_in_roi"])
        for n in sorted((_metal_under(image, pixel_spacing_mm, hand, shafts, ends_by_bone, image_max)
                         | metal_suspect) - {"V"})
    }
    details["metal_over"] = sorted(bone_refusals)
    return HandLocation(view="PA", metacarpals=found, bone_refusals=bone_refusals, details=details)


def _thumb_axis(image: np.ndarray, pixel_spacing_mm: float, w: _Work, thumb: _Finger, s: float,
                details: dict) -> MetacarpalAxis | None:
    """Metacarpal I (display only) at the hand scale found for II-V (``details``), or None; an
    error in its trace never costs the result."""
    try:
        return _thumb_metacarpal(image, w, thumb, s, details.get("length_per_spacing", _LENGTH_PER_SPACING),
                                 pixel_spacing_mm)
    except (ValueError, IndexError):
        return None
