"""The patient's earlier DXR-BMD results from this node's database, for the picture's trend.

Every SR this node made is a row of ``outputs`` (kind ``SR``) with its file under data_dir. The
latest finished run of every other study is read (the header first, the content only when the
Patient ID matches), and its combined group gives the study date, the hand and the DXR-BMD.
Reading SR files costs a few ms each; a node with many thousand studies would want an index
table (a schema change in node/spool). The same SRs held by a ``[[pacs]]`` (this node's from
before a new data_dir, other nodes') are read by :mod:`node.retrieve.priors`;
:func:`merge_history` joins both.

Change is judged against the least significant change LSC = 2.77 x CV with CV = 0.68 %: the
short-term in-vivo precision of DXR-BMD (X-posure, women 30-40 y; 0.61 % in women over 64;
Jorgensen et al., Clin Physiol 2000;20:330-5), the larger of the two, so the test is
conservative. The phantom's repeat CV of this node (0.03-0.04 %, docs/method.md section 6)
leaves out positioning and anatomy and would make every change look significant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from analysis import date_from_da
from node.dicom import sr_groups, sr_hand

__all__ = ["LSC_PERCENT", "PRECISION_CV_PERCENT", "HistoryPoint", "Trend", "merge_history", "patient_history",
           "points_from_sr", "trend"]

log = logging.getLogger("dxr.report")

PRECISION_CV_PERCENT = 0.68
"""Short-term in-vivo CV of DXR-BMD (Jorgensen 2000), the precision the LSC uses."""
LSC_PERCENT = round(2.77 * PRECISION_CV_PERCENT, 2)
"""Least significant change at 95 % confidence for two measurements (2.77 x CV) = 1.88 %."""
_DXR_BMD = ("DXR0004", "99DXRNODE")


@dataclass(frozen=True)
class HistoryPoint:
    study_date: str
    """YYYYMMDD (may be empty when the SR had none)."""
    hand: str
    """``L``, ``R`` or ``U``."""
    bmd_g_cm2: float
    study_instance_uid: str = ""


@dataclass(frozen=True)
class Trend:
    previous: HistoryPoint
    change_g_cm2: float
    change_percent: float
    significant: bool
    """|change| exceeds the LSC."""


def years_between(earlier: str, later: str) -> float | None:
    a, b = date_from_da(earlier), date_from_da(later)
    return None if a is None or b is None else (b - a).days / 365.25


def _combined_points(sr: Dataset) -> list[tuple[str, float]]:
    """(hand, DXR-BMD) of each "DXR-BMD, <hand>" group in a node SR."""
    return [(sr_hand(g.identifier), g.numbers[_DXR_BMD]) for g in sr_groups(sr)
            if g.identifier.startswith("DXR-BMD") and _DXR_BMD in g.numbers]


def patient_history(store: Any, source: Dataset) -> list[HistoryPoint]:
    """Earlier results of ``source``'s patient (same Patient ID and issuer) from other studies, oldest first."""
    patient_id = str(source.get("PatientID", "") or "").strip()
    if not patient_id:
        return []
    issuer = str(source.get("IssuerOfPatientID", "") or "")
    study_uid = str(source.StudyInstanceUID)
    rows = store._query(  # read-only; the latest finished run of each other study
        "SELECT o.path, j.study_instance_uid FROM outputs o JOIN jobs j ON o.job_id=j.id "
        "WHERE o.kind='SR' AND j.state='done' AND j.study_instance_uid<>? AND j.run=("
        "  SELECT MAX(run) FROM jobs WHERE study_instance_uid=j.study_instance_uid AND state='done')",
        (study_uid,),
    )
    points: list[HistoryPoint] = []
    for row in rows:
        path = store.data_dir / row["path"]
        try:
            head = pydicom.dcmread(path, specific_tags=["PatientID", "IssuerOfPatientID", "StudyDate"])
            if str(head.get("PatientID", "")).strip() != patient_id or str(head.get("IssuerOfPatientID", "") or "") != issuer:
                continue
            sr = pydicom.dcmread(path)
            for hand, bmd in _combined_points(sr):
                points.append(HistoryPoint(str(head.get("StudyDate", "") or ""), hand, bmd, row["study_instance_uid"]))
        except Exception as exc:  # noqa: BLE001 - a missing or odd file loses one point, never the report
            log.warning("event=history_unreadable path=%s error=%r", row["path"], str(exc))
    return sorted(points, key=lambda p: p.study_date)


def points_from_sr(sr: Dataset, study_uid: str = "") -> list[HistoryPoint]:
    """The combined results (one per hand) a node SR states, dated by its StudyDate."""
    date_text = str(sr.get("StudyDate", "") or "")
    return [HistoryPoint(date_text, hand, bmd, study_uid or str(sr.get("StudyInstanceUID", "")))
            for hand, bmd in _combined_points(sr)]


def merge_history(*sources: list[HistoryPoint]) -> list[HistoryPoint]:
    """Points from several sources (this node's outputs, a PACS), one per study and hand, oldest first.

    The first source's point wins where two give the same study and hand (the same SR read twice,
    or a later run of the study on this node)."""
    seen: dict[tuple[str, str], HistoryPoint] = {}
    for points in sources:
        for p in points:
            seen.setdefault((p.study_instance_uid, p.hand), p)
    return sorted(seen.values(), key=lambda p: p.study_date)


def trend(history: list[HistoryPoint], hand: str, bmd_g_cm2: float | None, study_date: str) -> Trend | None:
    """Change since the latest earlier result of the same hand (dated before this study), or None."""
    if bmd_g_cm2 is None:
        return None
    earlier = [p for p in history if p.hand == hand and (not study_date or not p.study_date or p.study_date <= study_date)]
    if not earlier:
        return None
    previous = earlier[-1]
    change = bmd_g_cm2 - previous.bmd_g_cm2
    percent = 100.0 * change / previous.bmd_g_cm2
    return Trend(previous, change, percent, abs(percent) > LSC_PERCENT)
