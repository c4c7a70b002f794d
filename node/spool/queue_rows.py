"""The exports half of :class:`node.spool.store.Store`: claim, settle, list and re-queue rows (jobs too, for the CLI).

A mixin: ``Store`` supplies ``_tx`` (one short write transaction) and ``_query``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.spool.records import Export, Job

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_COUNT", "QueueRows"]

MAX_BATCH_COUNT = 100
"""Exports per destination batch (one association)."""
MAX_BATCH_BYTES = 256 * 1024**2
"""Output bytes per destination batch (the DIMSE sender reads a batch into memory)."""


class QueueRows:
    """Export and CLI-view methods of the Store (see its module docstring for the states)."""

    _tx: Any
    _query: Any

    # ---------------------------------------------------------------- exports
    def claim_due_exports(
        self, now: float | None = None, exclude: frozenset[str] | set[str] = frozenset(),
        max_count: int = MAX_BATCH_COUNT, max_bytes: int = MAX_BATCH_BYTES,
    ) -> dict[str, list[Export]]:
        """Queued exports whose time has come, marked 'sending', grouped by destination.

        Destinations in ``exclude`` (e.g. still busy with an earlier batch) are left alone. A
        destination's batch holds at most ``max_count`` exports and ``max_bytes`` of files (at
        least one export): the sender reads a batch into memory; the rest waits for the next.
        """
        now = time.time() if now is None else now
        by_dest: dict[str, list[Export]] = {}
        sizes: dict[str, int] = {}
        data_dir: Path = self.data_dir  # type: ignore[attr-defined]
        with self._tx() as c:
            rows = c.execute(
                "SELECT e.*, o.path, o.study_instance_uid, o.sop_class_uid FROM exports e "
                "JOIN outputs o ON o.sop_instance_uid=e.output_sop_instance_uid "
                "WHERE e.state='queued' AND e.next_attempt_at<=? ORDER BY e.id",
                (now,),
            ).fetchall()
            for r in rows:
                dest = r["destination"]
                if dest in exclude:
                    continue
                size = _size(data_dir / r["path"])
                batch = by_dest.get(dest, [])
                if batch and (len(batch) >= max_count or sizes[dest] + size > max_bytes):
                    continue
                sizes[dest] = sizes.get(dest, 0) + size
                c.execute("UPDATE exports SET state='sending', updated_at=? WHERE id=?", (now, r["id"]))
                by_dest.setdefault(r["destination"], []).append(Export(**{**dict(r), "state": "sending"}))
        return by_dest

    def export_sent(self, export_id: int) -> None:
        with self._tx() as c:
            _count(c, "export_attempts", export_id)
            c.execute(
                "UPDATE exports SET state='sent', attempts=attempts+1, last_error=NULL, updated_at=? WHERE id=?",
                (time.time(), export_id),
            )

    def export_attempt_failed(
        self, export_id: int, error: str, *, max_attempts: int, delay_seconds: Callable[[int], float]
    ) -> Export:
        """Count a failed attempt: queued again after the backoff delay, or 'failed' at the cap.

        ``delay_seconds(attempts)`` gives the backoff after that many failed attempts.
        """
        now = time.time()
        with self._tx() as c:
            r = c.execute("SELECT * FROM exports WHERE id=?", (export_id,)).fetchone()
            if r["state"] != "sending":  # already settled (e.g. sent) or re-queued by hand
                return Export(**dict(r))
            attempts = r["attempts"] + 1
            _count(c, "export_attempts", export_id)
            _count(c, "export_failures", export_id)
            if attempts >= max_attempts:
                state, next_at = "failed", now
            else:
                state, next_at = "queued", now + delay_seconds(attempts)
            c.execute(
                "UPDATE exports SET state=?, attempts=?, next_attempt_at=?, last_error=?, updated_at=? WHERE id=?",
                (state, attempts, next_at, error[:2000], now, export_id),
            )
            return Export(**{**dict(r), "state": state, "attempts": attempts, "next_attempt_at": next_at, "last_error": error})

    # ---------------------------------------------------------------- CLI views
    def list_jobs(self) -> list[Job]:
        return [Job(**dict(r)) for r in self._query("SELECT * FROM jobs ORDER BY id")]

    def list_exports(self) -> list[Export]:
        rows = self._query(
            "SELECT e.*, COALESCE(o.path, '') AS path, COALESCE(o.study_instance_uid, '') AS study_instance_uid, "
            "COALESCE(o.sop_class_uid, '') AS sop_class_uid FROM exports e "
            "LEFT JOIN outputs o ON o.sop_instance_uid=e.output_sop_instance_uid ORDER BY e.id"
        )
        return [Export(**dict(r)) for r in rows]

    def retry_export(self, export_id: int) -> Export | None:
        """Re-queue a failed export now with a fresh attempt budget; None if no such export."""
        now = time.time()
        return self._requeue_failed("exports", Export, export_id, next_attempt_at=now, updated_at=now)

    def retry_job(self, job_id: int) -> Job | None:
        """Re-queue a failed job; None if no such job."""
        return self._requeue_failed("jobs", Job, job_id, worker_pid=None, updated_at=time.time())

    def _requeue_failed(self, table: str, record: Any, row_id: int, **columns: Any) -> Any:
        """A ``failed`` row of ``table`` back to ``queued`` with no attempts and ``columns`` set.

        Returns the row as ``record`` afterwards (unchanged if it was not failed), None if there is none.
        """
        changes = {"state": "queued", "attempts": 0, **columns}
        with self._tx() as c:
            r = c.execute(f"SELECT * FROM {table} WHERE id=?", (row_id,)).fetchone()
            if r is None:
                return None
            if r["state"] != "failed":
                return record(**dict(r))
            c.execute(f"UPDATE {table} SET {', '.join(f'{k}=?' for k in changes)} WHERE id=?", (*changes.values(), row_id))
            return record(**{**dict(r), **changes})



def _count(c: Any, name: str, export_id: int) -> None:
    """One more of a monotonic counter (``counters`` table), labelled with the export's destination."""
    c.execute("INSERT INTO counters (name, label, value) SELECT ?, destination, 1 FROM exports WHERE id=? "
              "ON CONFLICT (name, label) DO UPDATE SET value = value + 1", (name, export_id))


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # the sender reports the missing file
