"""The end of a screen: counts by status and reason, the T-score distribution, ``followup.csv``.

Computed over every row in the output folder (this run and earlier ones), so a screen done in
several runs ends with one summary of the whole archive.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_THRESHOLD", "FOLLOWUP_COLUMNS", "SUMMARY_COLUMNS", "summarise", "followup_rows",
           "followup_from_table", "write_followup", "t_score_histogram"]

DEFAULT_THRESHOLD = -2.5
"""T-score (SD) at or below which a patient is listed for follow-up (the WHO osteoporosis threshold)."""
FOLLOWUP_COLUMNS = ("patient_id", "lowest_t_score", "z_score", "dxr_bmd_g_cm2", "who_category", "sex", "age_years",
                    "study_date", "study_instance_uid", "sop_instance_uid", "file", "source", "images_measured")
SUMMARY_COLUMNS = ["key", "status", "reason", "t_score",
                   *[c for c in FOLLOWUP_COLUMNS if c not in ("lowest_t_score", "images_measured")]]
"""The results columns the summary and the follow-up list read (not the whole table)."""
_HISTOGRAM_EDGES = (-math.inf, -4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, math.inf)


def _patient(row: dict[str, Any]) -> str:
    """Rows of one patient share this; an image without PatientID is a patient of its own."""
    return f"id:{row['patient_id']}" if row.get("patient_id") else f"key:{row['key']}"


def followup_rows(rows: list[dict[str, Any]], threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
    """One row per patient whose lowest T-score is ≤ ``threshold`` (SD): that image's result.

    Sorted by T-score, lowest first; ``images_measured`` counts the patient's images with a T-score.
    """
    lowest: dict[str, dict[str, Any]] = {}
    measured: Counter[str] = Counter()
    for row in rows:
        if row.get("t_score") is None or row.get("status") != "ok":
            continue
        who = _patient(row)
        measured[who] += 1
        if who not in lowest or row["t_score"] < lowest[who]["t_score"]:
            lowest[who] = row
    out = []
    for who, row in lowest.items():
        if row["t_score"] <= threshold:
            out.append({col: row.get(col) for col in FOLLOWUP_COLUMNS}
                       | {"lowest_t_score": row["t_score"], "images_measured": measured[who]})
    return sorted(out, key=lambda r: r["lowest_t_score"])


def write_followup(path: Path, rows: list[dict[str, Any]]) -> None:
    """``followup.csv`` (UTF-8, header line, empty cells for missing values)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FOLLOWUP_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    tmp.replace(path)


def t_score_histogram(t_scores: list[float]) -> list[tuple[str, int]]:
    """Counts of T-scores (SD) in half-SD bins, labelled ``[lo, hi)`` with open outer bins."""
    counts = [0] * (len(_HISTOGRAM_EDGES) - 1)
    for t in t_scores:
        for i in range(len(counts)):
            if _HISTOGRAM_EDGES[i] <= t < _HISTOGRAM_EDGES[i + 1]:
                counts[i] += 1
                break
    labels = []
    for lo, hi in zip(_HISTOGRAM_EDGES[:-1], _HISTOGRAM_EDGES[1:]):
        labels.append(f"< {hi:+.1f}" if lo == -math.inf else f">= {lo:+.1f}" if hi == math.inf
                      else f"[{lo:+.1f}, {hi:+.1f})")
    return list(zip(labels, counts))


def _quantile(sorted_values: list[float], q: float) -> float:
    position = q * (len(sorted_values) - 1)
    lo = math.floor(position)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (position - lo)


def followup_from_table(table: Any, threshold: float) -> list[dict[str, Any]]:
    """:func:`followup_rows` of a results table, converting only the rows of patients it lists.

    A million-row table stays in Arrow; Python dicts are made for the measured images of the
    patients with any T-score at or below ``threshold``.
    """
    import pyarrow.compute as pc

    measured = table.filter(pc.and_(pc.equal(table["status"], "ok"), pc.is_valid(table["t_score"])))
    low = measured.filter(pc.less_equal(measured["t_score"], threshold))
    ids = pc.unique(low["patient_id"].drop_null())
    keys = low.filter(pc.is_null(low["patient_id"]))["key"]
    mask = pc.or_(pc.fill_null(pc.is_in(measured["patient_id"], value_set=ids), False),
                  pc.is_in(measured["key"], value_set=pc.unique(keys)))
    return followup_rows(measured.filter(mask).to_pylist(), threshold)


def summarise(table: Any, threshold: float, followup: list[dict[str, Any]]) -> str:
    """The text printed at the end of ``dxr-node screen`` (counts, T distribution, follow-up count).

    ``table``: the results (a ``pyarrow.Table`` with at least ``status``, ``reason``, ``t_score``,
    ``who_category``).
    """
    statuses, reasons = table["status"].to_pylist(), table["reason"].to_pylist()
    lines = [f"images: {len(statuses)}"]
    by_status = Counter(statuses)
    by_reason = Counter((st, reason) for st, reason in zip(statuses, reasons) if reason)
    for status in sorted(by_status):
        lines.append(f"  {status:<8} {by_status[status]:>8}")
        for (st, reason), n in sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0][1])):
            if st == status:
                lines.append(f"    {reason:<28} {n:>8}")
    scored = [(t, c) for st, t, c in zip(statuses, table["t_score"].to_pylist(), table["who_category"].to_pylist())
              if st == "ok" and t is not None]
    t_scores = sorted(t for t, _ in scored)
    if t_scores:
        lines.append(f"T-score (SD) of {len(t_scores)} measured images: median {_quantile(t_scores, 0.5):+.2f}, "
                     f"quartiles {_quantile(t_scores, 0.25):+.2f} / {_quantile(t_scores, 0.75):+.2f}, "
                     f"min {t_scores[0]:+.2f}, max {t_scores[-1]:+.2f}")
        for label, n in t_score_histogram(t_scores):
            lines.append(f"  {label:<16} {n:>8}  {'#' * round(40 * n / len(t_scores))}")
        categories = Counter(str(c) for _, c in scored)
        lines.append("DXR screening category: " + ", ".join(f"{c} {n}" for c, n in sorted(categories.items())))
    else:
        lines.append("T-score: no measured image")
    lines.append(f"follow-up (lowest T-score <= {threshold:+.1f}): {len(followup)} patients")
    return "\n".join(lines)
