"""The screen's results on disk: one Parquet row per image, written in batches, read back to skip.

``DIR/results/`` is a Parquet dataset (``pyarrow.dataset.dataset("DIR/results")``,
``pandas.read_parquet("DIR/results")``): every batch is one ``part-<run>-<n>.parquet`` file,
written under a dot-name and renamed, so a killed run leaves whole files only (readers skip
dot-files). The columns are :data:`SCHEMA`: the ``dxr-node analyze`` JSON fields flattened
(per bone ``ii_``/``iii_``/``iv_`` prefixes) plus where the image came from.

A row's ``key`` says which input it is: ``sop:<SOPInstanceUID>`` for an instance from a PACS,
``file:<absolute path>:<size>:<mtime ns>`` for a file (a changed file is a new input).
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from analysis import date_from_da

__all__ = ["SCHEMA", "BONES", "ResultWriter", "flatten", "existing_keys", "read_results", "results_dir"]

BONES = ("II", "III", "IV")
_BONE_FIELDS = (("status", pa.string()), ("reason", pa.string()), ("cortical_thickness_mm", pa.float64()),
                ("outer_width_mm", pa.float64()), ("mci", pa.float64()))

SCHEMA = pa.schema([
    ("key", pa.string()),
    ("source", pa.string()),
    ("source_kind", pa.string()),
    ("file", pa.string()),
    ("file_size", pa.int64()),
    ("file_mtime_ns", pa.int64()),
    ("sop_instance_uid", pa.string()),
    ("series_instance_uid", pa.string()),
    ("study_instance_uid", pa.string()),
    ("patient_id", pa.string()),
    ("study_date", pa.date32()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("message", pa.string()),
    ("laterality", pa.string()),
    ("view", pa.string()),
    ("pixel_spacing_mm", pa.float64()),
    ("pixel_spacing_source", pa.string()),
    ("bones_measured", pa.int32()),
    ("reduced_service", pa.bool_()),
    *[(f"{bone.lower()}_{name}", kind) for bone in BONES for name, kind in _BONE_FIELDS],
    ("cortical_thickness_mm", pa.float64()),
    ("outer_width_mm", pa.float64()),
    ("mci", pa.float64()),
    ("vpa_mm", pa.float64()),
    ("bhi", pa.float64()),
    ("dxr_bmd_g_cm2", pa.float64()),
    ("t_score", pa.float64()),
    ("z_score", pa.float64()),
    ("who_category", pa.string()),
    ("scores_omitted_reason", pa.string()),
    ("reference", pa.string()),
    ("reference_provisional", pa.bool_()),
    ("sex", pa.string()),
    ("age_years", pa.float64()),
    ("analysis_version", pa.string()),
    ("worker", pa.string()),
    ("task_wall_seconds", pa.float64()),
    ("task_cpu_seconds", pa.float64()),
    ("screened_at", pa.timestamp("s", tz="UTC")),
])
"""The columns of every results file (lengths in mm, DXR-BMD in g/cm², T and Z in SD)."""

_RESULT_FIELDS = ("status", "reason", "message", "laterality", "view", "pixel_spacing_mm", "pixel_spacing_source",
                  "bones_measured", "reduced_service", "cortical_thickness_mm", "outer_width_mm", "mci", "vpa_mm",
                  "bhi", "dxr_bmd_g_cm2", "t_score", "z_score", "who_category", "scores_omitted_reason", "reference",
                  "reference_provisional", "sex", "age_years", "analysis_version")


def flatten(item: dict[str, Any], result_json: dict[str, Any], header: dict[str, Any] | None = None) -> dict[str, Any]:
    """One results row from the input ``item``, the analysis JSON and the image's header fields.

    Parameters
    ----------
    item : dict
        The input (:class:`node.screen.sources` item): ``key``, ``source``, ``kind`` and, for a
        file, ``path``, ``size``, ``mtime_ns``; for a PACS instance the UIDs and header fields
        the query returned.
    result_json : dict
        :meth:`analysis.result.AnalysisResult.to_json` of the image.
    header : dict, optional
        ``PatientID``, ``StudyDate``, ``StudyInstanceUID``, ``SeriesInstanceUID``,
        ``SOPInstanceUID`` read from the image (they win over the item's).
    """
    header = {k: v for k, v in (header or {}).items() if v not in (None, "")}
    ids = {k: header.get(k, item.get(k)) for k in ("PatientID", "StudyDate", "StudyInstanceUID",
                                                   "SeriesInstanceUID", "SOPInstanceUID")}
    row: dict[str, Any] = {
        "key": item["key"], "source": item.get("source"), "source_kind": item["kind"], "file": item.get("path"),
        "file_size": item.get("size"), "file_mtime_ns": item.get("mtime_ns"),
        "sop_instance_uid": ids["SOPInstanceUID"], "series_instance_uid": ids["SeriesInstanceUID"],
        "study_instance_uid": ids["StudyInstanceUID"], "patient_id": ids["PatientID"],
        "study_date": date_from_da(ids["StudyDate"]),
    }
    row.update({name: result_json.get(name) for name in _RESULT_FIELDS})
    bones = result_json.get("bones") or {}
    for bone in BONES:
        values = bones.get(bone) or {}
        for name, _ in _BONE_FIELDS:
            row[f"{bone.lower()}_{name}"] = values.get(name)
    row["worker"] = f"{os.uname().nodename}:{os.getpid()}"
    row["screened_at"] = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return row


def results_dir(out_dir: Path) -> Path:
    """The Parquet dataset folder inside the screen's output folder."""
    return out_dir / "results"


def _part_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))


def read_results(out_dir: Path, columns: list[str] | None = None) -> pa.Table:
    """Every row written so far (all runs), as one table with :data:`SCHEMA` (or ``columns`` of it)."""
    files = _part_files(results_dir(out_dir))
    if not files:
        return SCHEMA.empty_table().select(columns) if columns else SCHEMA.empty_table()
    return pads.dataset(files, schema=SCHEMA, format="parquet").to_table(columns=columns)


def existing_keys(out_dir: Path) -> set[str]:
    """The ``key`` of every row already in ``out_dir`` (what a rerun skips)."""
    return set(read_results(out_dir, ["key"]).column("key").to_pylist())


class ResultWriter:
    """Collects rows and writes them as Parquet files of at most ``batch_rows`` rows.

    A batch is written when it is full or ``batch_seconds`` after its first row (so a crash
    loses at most that much work), and by :meth:`close`.
    """

    def __init__(self, out_dir: Path, batch_rows: int = 1000, batch_seconds: float = 30.0):
        self.folder = results_dir(out_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.batch_rows, self.batch_seconds = batch_rows, batch_seconds
        self.run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        self.rows: list[dict[str, Any]] = []
        self.first_row_at = 0.0
        self.files_written = 0
        self.rows_written = 0

    def add(self, row: dict[str, Any]) -> None:
        """Queue one row; writes the batch when it is due."""
        if not self.rows:
            self.first_row_at = time.monotonic()
        self.rows.append(row)
        if len(self.rows) >= self.batch_rows or time.monotonic() - self.first_row_at >= self.batch_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the queued rows as one file (temporary dot-name, fsync, rename)."""
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=SCHEMA)
        name = f"part-{self.run_id}-{self.files_written:05d}.parquet"
        tmp = self.folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.folder / name)
        self.files_written += 1
        self.rows_written += len(self.rows)
        self.rows = []

    def close(self) -> None:
        self.flush()
