"""What the page shows of a result: read back from the node's own SR (the SR is the record, not a copy).

:func:`sr_summary` walks a node SR's measurement groups: each "DXR-BMD, <hand>" group gives
DXR-BMD (g/cm²), T- and Z-score and the extent of service; each metacarpal group says whether
the bone was measured; a "No measurement" group gives the refusal reason. The result picture
(Secondary Capture) is decoded to PNG by :func:`picture_png`.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from node.dicom import sr_bone, sr_groups, sr_hand

__all__ = ["HandResult", "StudyResult", "picture_png", "sr_summary"]

_OUTCOME = ("DXR0040", "99DXRNODE")
_REASON = ("DXR0060", "99DXRNODE")
_EXTENT = ("DXR0021", "99DXRNODE")
_VALUES = {("DXR0004", "99DXRNODE"): "bmd", ("DXR0005", "99DXRNODE"): "t_score", ("113071", "DCM"): "z_score"}
_HAND_WORDS = {"L": "left", "R": "right", "U": "hand"}


@dataclass
class HandResult:
    """One hand's combined result (DXR-BMD in g/cm²)."""

    hand: str
    bmd: float | None = None
    t_score: float | None = None
    z_score: float | None = None
    bones: list[str] = field(default_factory=list)
    """Metacarpals measured (``II``, ``III``, ``IV``)."""
    extent: str = ""


@dataclass
class StudyResult:
    """A study's result as its SR states it: measured hands, or why nothing was measured."""

    hands: list[HandResult] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)


def _summarise(sr: pydicom.Dataset) -> StudyResult:
    result = StudyResult()
    bones: dict[str, list[str]] = {}
    for group in sr_groups(sr):
        hand_word = _HAND_WORDS[sr_hand(group.identifier)]
        if group.identifier.startswith("DXR-BMD"):
            hand = HandResult(hand_word, extent=group.meanings.get(_EXTENT, ""))
            for code, attr in _VALUES.items():
                setattr(hand, attr, group.numbers.get(code))
            result.hands.append(hand)
        elif group.identifier.startswith("Metacarpal") and group.meanings.get(_OUTCOME) == "Measured":
            bones.setdefault(hand_word, []).append(sr_bone(group.identifier))
        elif _REASON in group.meanings:
            result.refusals.append(group.meanings[_REASON])
    for hand in result.hands:
        hand.bones = bones.get(hand.hand, [])
    return result


@functools.lru_cache(maxsize=512)
def _cached_summary(path: str, _mtime_ns: int) -> StudyResult:
    return _summarise(pydicom.dcmread(path))


def sr_summary(path: Path) -> StudyResult | None:
    """The result an SR file states, or None when the file is gone or unreadable (cached per file version)."""
    try:
        return _cached_summary(str(path), os.stat(path).st_mtime_ns)
    except Exception:  # noqa: BLE001 - a missing or odd file shows "no result", never an error page
        return None


@functools.lru_cache(maxsize=32)
def _cached_png(path: str, _mtime_ns: int) -> bytes:
    from PIL import Image

    ds = pydicom.dcmread(path)
    buf = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def picture_png(path: Path) -> bytes | None:
    """The Secondary Capture picture as PNG bytes, or None when the file is gone or cannot be decoded."""
    try:
        return _cached_png(str(path), os.stat(path).st_mtime_ns)
    except Exception:  # noqa: BLE001
        return None
