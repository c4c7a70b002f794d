"""The page's data, read from the node's SQLite database and files (read-only).

:func:`recent_studies` gives each recent study's state in words a technologist reads —
``receiving``, ``queued``, ``analysing``, ``analysed``, ``refused`` (with the reason),
``failed`` — its result from the SR, and its exports per destination; :func:`queue_view` the
jobs and exports waiting or failed; :func:`destinations_view` each destination's last export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pydicom

from node.config import Config
from node.web.results import StudyResult, sr_summary

__all__ = ["StudyRow", "destinations_view", "queue_view", "recent_studies", "latest_job", "study_outputs", "study_row"]

RECENT_STUDIES = 50
"""Studies shown on the page, newest first."""
_HEADER_TAGS = ["PatientID", "AccessionNumber", "StudyDate", "StudyDescription"]


@dataclass
class StudyRow:
    """One study as the page shows it."""

    study_uid: str
    state: str
    detail: str = ""
    """Why refused or failed (one line)."""
    instances: int = 0
    received_at: float = 0.0
    patient_id: str = ""
    accession: str = ""
    study_date: str = ""
    result: StudyResult | None = None
    exports: dict[str, str] = field(default_factory=dict)
    """Destination -> ``sent``, ``queued``, ``sending`` or ``failed: <error>``."""
    pictures: int = 0


def _header(store: Any, study_uid: str) -> dict[str, str]:
    rows = store._query("SELECT path FROM instances WHERE study_instance_uid=? ORDER BY received_at LIMIT 1",
                        (study_uid,))
    if not rows:
        return {}
    try:
        ds = pydicom.dcmread(store.data_dir / rows[0]["path"], specific_tags=_HEADER_TAGS)
    except Exception:  # noqa: BLE001 - a purged or odd spool file: the row still shows
        return {}
    return {k: str(ds.get(k, "") or "") for k in _HEADER_TAGS}


def latest_job(store: Any, study_uid: str) -> Any:
    """The study's latest run that was not superseded (a ``jobs`` row), or None."""
    rows = store._query("SELECT * FROM jobs WHERE study_instance_uid=? AND state<>'superseded' "
                        "ORDER BY run DESC LIMIT 1", (study_uid,))
    return rows[0] if rows else None


def study_outputs(store: Any, job_id: int) -> list[Any]:
    """The outputs (SR, SC) of one job, SRs first."""
    return store._query("SELECT * FROM outputs WHERE job_id=? ORDER BY kind DESC, sop_instance_uid", (job_id,))


def _exports(store: Any, outputs: list[Any]) -> dict[str, str]:
    states: dict[str, list[tuple[str, str]]] = {}
    for out in outputs:
        for e in store._query("SELECT destination, state, last_error FROM exports WHERE output_sop_instance_uid=?",
                              (out["sop_instance_uid"],)):
            states.setdefault(e["destination"], []).append((e["state"], e["last_error"] or ""))
    summary = {}
    for dest, items in states.items():
        failed = [err for state, err in items if state == "failed"]
        if failed:
            summary[dest] = f"failed: {failed[0]}"
        elif all(state == "sent" for state, _ in items):
            summary[dest] = "sent"
        else:
            summary[dest] = "sending" if any(s == "sending" for s, _ in items) else "queued"
    return summary


def _state(row: StudyRow, study: Any, job: Any) -> None:
    """Fill ``row.state``/``detail`` from the study and its latest job (and the SR, once analysed)."""
    if study["state"] == "receiving":
        row.state = "receiving"
    elif job is None or job["state"] == "queued":
        row.state = "queued"
    elif job["state"] == "running":
        row.state = "analysing"
    elif job["state"] == "failed":
        row.state, row.detail = "failed", job["last_error"] or ""
    elif row.result is not None and not row.result.hands and row.result.refusals:
        row.state, row.detail = "refused", "; ".join(dict.fromkeys(row.result.refusals))
    else:
        row.state = "analysed"


def _row(store: Any, study: Any) -> StudyRow:
    uid = study["study_instance_uid"]
    head = _header(store, uid)
    row = StudyRow(uid, "", instances=study["n"], received_at=study["last_received_at"],
                   patient_id=head.get("PatientID", ""), accession=head.get("AccessionNumber", ""),
                   study_date=head.get("StudyDate", ""))
    job = latest_job(store, uid)
    if job is not None and job["state"] == "done":
        outputs = study_outputs(store, job["id"])
        srs = [o for o in outputs if o["kind"] == "SR"]
        row.result = sr_summary(store.data_dir / srs[0]["path"]) if srs else None
        row.pictures = sum(1 for o in outputs if o["kind"] == "SC")
        row.exports = _exports(store, outputs)
    _state(row, study, job)
    return row


_STUDIES = ("SELECT s.*, (SELECT COUNT(*) FROM instances i WHERE i.study_instance_uid=s.study_instance_uid) AS n "
            "FROM studies s ")


def recent_studies(store: Any, limit: int = RECENT_STUDIES) -> list[StudyRow]:
    """The latest ``limit`` studies (by last instance received), newest first."""
    return [_row(store, s) for s in store._query(_STUDIES + "ORDER BY s.last_received_at DESC LIMIT ?", (limit,))]


def study_row(store: Any, study_uid: str) -> StudyRow | None:
    """One study's row, or None when the node has no such study."""
    studies = store._query(_STUDIES + "WHERE s.study_instance_uid=?", (study_uid,))
    return _row(store, studies[0]) if studies else None


def queue_view(store: Any) -> dict[str, list[Any]]:
    """Failed exports (with a retry button), exports waiting, and failed jobs."""
    exports = store._query(
        "SELECT e.*, COALESCE(o.study_instance_uid, '') AS study_instance_uid, COALESCE(o.kind, '') AS kind "
        "FROM exports e LEFT JOIN outputs o ON o.sop_instance_uid=e.output_sop_instance_uid "
        "WHERE e.state<>'sent' ORDER BY e.id DESC LIMIT 200")
    jobs = store._query("SELECT * FROM jobs WHERE state IN ('queued', 'running', 'failed') ORDER BY id DESC LIMIT 100")
    return {"failed": [e for e in exports if e["state"] == "failed"],
            "waiting": [e for e in exports if e["state"] != "failed"], "jobs": list(jobs)}


def destinations_view(config: Config, store: Any) -> list[dict[str, Any]]:
    """Each configured destination with where it points and its last export (state, error, when)."""
    out = []
    for dest in config.destinations:
        where = {"dimse": f"{dest.ae_title}@{dest.host}:{dest.port}", "folder": str(dest.path),
                 "dicomweb": dest.url or ""}[dest.type]
        last = store._query("SELECT state, last_error, updated_at FROM exports WHERE destination=? "
                            "ORDER BY updated_at DESC LIMIT 1", (dest.name,))
        last_error = store._query("SELECT last_error, updated_at FROM exports WHERE destination=? AND last_error "
                                  "IS NOT NULL ORDER BY updated_at DESC LIMIT 1", (dest.name,))
        out.append({"name": dest.name, "type": dest.type, "where": where,
                    "last_state": last[0]["state"] if last else "-",
                    "last_at": last[0]["updated_at"] if last else None,
                    "last_error": last_error[0]["last_error"] if last_error else ""})
    return out
