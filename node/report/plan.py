"""Report planning: which image each hand's report measures on, and why every other image is not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from analysis.result import REASON_MESSAGES, AnalysisResult
from node.report.codes import NOT_BEST_IMAGE, OTHER_HAND, REASON_CODES, UNKNOWN_REASON

try:  # a private highdicom helper (optional): without it an instance with rows and columns counts as an image
    from highdicom._standard_utils import does_iod_have_pixel_data
except ImportError:
    does_iod_have_pixel_data = None

__all__ = ['HAND_SEEN_REASONS', 'shows_a_hand', 'HandReport', 'ImageEntry', 'UnusedEntry', 'describe_image', 'hand_of', 'hand_words', 'is_image', 'plan_reports', 'reason_code', 'reason_text']


@dataclass
class ImageEntry:
    dataset: Dataset
    result: AnalysisResult
    hand: str  # "L", "R" or "U" (unknown)


@dataclass
class UnusedEntry:
    image: ImageEntry
    use: hd.sr.CodedConcept  # why it was not used (code)
    text: str  # one sentence


@dataclass
class HandReport:
    hand: str
    measured: ImageEntry
    unused: list[UnusedEntry] = field(default_factory=list)


def is_image(ds: Dataset) -> bool:
    """An instance the SR can reference as an image (Image Library, SCOORD)."""
    if does_iod_have_pixel_data is None:
        return "Rows" in ds and "Columns" in ds
    return "Rows" in ds and "Columns" in ds and does_iod_have_pixel_data(str(ds.SOPClassUID))


def hand_of(ds: Dataset, result: AnalysisResult) -> str:
    for value in (result.laterality, ds.get("ImageLaterality"), ds.get("Laterality")):
        if value and str(value).upper() in ("L", "R"):
            return str(value).upper()
    return "U"


def _is_measured_pa(image: ImageEntry) -> bool:
    return image.result.status == "ok" and image.result.view in ("PA", None) and image.result.bones_measured >= 2


def _rank(image: ImageEntry) -> tuple:
    """Higher is better: more bones, then higher mean bone quality, then a stable UID order."""
    qualities = [b.quality for b in image.result.bones.values() if b.status == "ok" and b.quality is not None]
    mean_quality = float(np.mean(qualities)) if qualities else 0.0
    return (image.result.bones_measured, mean_quality, str(image.dataset.SOPInstanceUID))


def plan_reports(entries: list[ImageEntry]) -> list[HandReport]:
    reports: list[HandReport] = []
    for hand in ("L", "R", "U"):
        candidates = [e for e in entries if e.hand == hand and _is_measured_pa(e)]
        if candidates:
            reports.append(HandReport(hand=hand, measured=max(candidates, key=_rank)))
    for report in reports:
        for entry in entries:
            if entry is report.measured:
                continue
            if entry.hand != report.hand and any(r.measured is entry for r in reports):
                report.unused.append(UnusedEntry(entry, OTHER_HAND, f"Reported in the {hand_words(entry.hand)} report."))
            elif _is_measured_pa(entry):
                report.unused.append(
                    UnusedEntry(entry, NOT_BEST_IMAGE, "Another PA image of this hand gave the better measurement.")
                )
            else:
                report.unused.append(UnusedEntry(entry, reason_code(entry.result), reason_text(entry.result)))
    return reports


def reason_code(result: AnalysisResult) -> hd.sr.CodedConcept:
    if result.status == "ok":  # measured but not as a PA view
        return REASON_CODES.get(f"{result.view}_view", REASON_CODES["not_pa_hand"])
    return REASON_CODES.get(result.reason or "", UNKNOWN_REASON)


def reason_text(result: AnalysisResult) -> str:
    if result.status == "ok":
        return REASON_MESSAGES.get(f"{result.view}_view", REASON_MESSAGES["not_pa_hand"])
    return result.message or REASON_MESSAGES.get(result.reason or "", "No measurement was made.")


HAND_SEEN_REASONS = frozenset({
    "lateral_view", "oblique_view", "immature_skeleton", "bone_not_found", "foreign_object_in_roi", "low_quality",
})
"""Refusals made after the analysis found a hand (the view or the bones failed, not the subject)."""
HAND_BODY_PARTS = frozenset({"HAND", "WRIST", "FINGER"})


def shows_a_hand(entry: ImageEntry) -> bool:
    """True when the analysis found a hand in the image or its header says it is a hand/wrist film.

    A chest film without BodyPartExamined (which the default analyse rule lets through) is
    refused ``not_pa_hand`` and shows no hand: with ``refusal_sr = "hands"`` its study gets no SR.
    """
    result = entry.result
    if result.status == "ok" or (result.reason or "") in HAND_SEEN_REASONS:
        return True
    return str(entry.dataset.get("BodyPartExamined", "") or "").strip().upper() in HAND_BODY_PARTS


def hand_words(hand: str) -> str:
    return {"L": "left hand", "R": "right hand"}.get(hand, "hand of unknown side")


def describe_image(ds: Dataset) -> str:
    parts = [f"series {ds.get('SeriesNumber', '?')} image {ds.get('InstanceNumber', '?')}"]
    view = ds.get("ViewPosition")
    if view:
        parts.append(str(view))
    return ", ".join(parts)
