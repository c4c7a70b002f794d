"""The Store: spool files plus the SQLite rows that say what happened to them, the node's single source of truth.

Every state change is one short transaction, so a crash at any line leaves a state that
:meth:`Store.recover` resumes::

    instance received -> study receiving -> study complete + job queued -> job running
      -> job done (outputs + exports queued) | job failed
      -> export sending -> export sent | export queued again (backoff) | export failed

Tables (the CLI and the other node modules rely on these names and states; schema in
:mod:`node.spool.schema`):

``instances``  sop_instance_uid (PK), study_instance_uid, series_instance_uid, sop_class_uid,
               transfer_syntax_uid, calling_ae, source ('dimse'|'dicomweb'), path (relative to
               data_dir), size_bytes, received_at (unix seconds)
``studies``    study_instance_uid (PK), state ('receiving'|'complete'), first_received_at,
               last_received_at, runs (number of jobs created so far)
``jobs``       id (PK), study_instance_uid, run (1, 2, ... per study), state ('queued'|'running'|
               'done'|'failed'|'superseded'), attempts, worker_pid, last_error, created_at,
               updated_at, started_at (when a worker last took it)
``outputs``    sop_instance_uid (PK), job_id, study_instance_uid, sop_class_uid, kind ('SR'|'SC'|
               'other'), path (relative to data_dir)
``exports``    id (PK), output_sop_instance_uid, destination, state ('queued'|'sending'|'sent'|
               'failed'), attempts, next_attempt_at, last_error, updated_at;
               UNIQUE(output_sop_instance_uid, destination)
``counters``   name, label, value: monotonic metric counters (export attempts and failures per destination)
``billing``    one row per finished study run (CPT 0749T, modifier, not performed and why, SR UIDs,
               superseded_by_run): :mod:`node.spool.billing`

One connection per process (guarded by a lock for the SCP's association threads), WAL mode,
``synchronous=FULL`` so a committed row survives power loss like the fsynced spool file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node.spool.billing import BillingFacts, BillingRows, record_billing
from node.spool.lock import DataDirBusy, lock_data_dir
from node.spool.files import atomic_write, byte_size, move_durably, same_body, uid_filename
from node.spool.queue_rows import QueueRows
from node.spool.records import InstanceRecord, Job
from node.spool.schema import SchemaError, prepare

__all__ = ["Store", "StoreError"]


class StoreError(RuntimeError):
    """A disk or database failure (the SCP answers 0xA700 Out of Resources).

    Every ``Store`` method raises this, never ``sqlite3.Error``: the node's threads catch it
    and keep running."""


class Store(QueueRows, BillingRows):
    """The SQLite database plus the data_dir layout; thread-safe within one process."""

    def __init__(self, data_dir: Path, *, exclusive: bool = False):
        """``exclusive``: take the data_dir lock first (``serve``: one node per data_dir; see node.spool.lock)."""
        self.data_dir = Path(data_dir)
        self._data_dir_lock = None
        if exclusive:
            try:
                self._data_dir_lock = lock_data_dir(self.data_dir)
            except DataDirBusy as exc:
                raise StoreError(str(exc)) from None
            except OSError as exc:
                raise StoreError(f"cannot lock {self.data_dir}: {exc}") from exc
        self.spool_dir = self.data_dir / "spool"
        self.outputs_dir = self.data_dir / "outputs"
        self.tmp_dir = self.data_dir / "tmp"
        try:
            for d in (self.data_dir, self.spool_dir, self.outputs_dir, self.tmp_dir):
                d.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.data_dir / "node.sqlite3", timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            prepare(self._conn)
        except (OSError, sqlite3.Error, SchemaError) as exc:
            raise StoreError(f"cannot open the node database in {self.data_dir}: {exc}") from exc
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        if self._data_dir_lock is not None:
            self._data_dir_lock.close()
            self._data_dir_lock = None

    # ---------------------------------------------------------------- plumbing
    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction (BEGIN IMMEDIATE takes the write lock up front)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"database unavailable: {exc}") from exc
            try:
                yield self._conn
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.Error):  # e.g. disk full, I/O error: callers handle StoreError
                    raise StoreError(f"database failure: {exc}") from exc
                raise
            else:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback()
                    raise StoreError(f"database commit failed: {exc}") from exc

    def _rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite may have rolled the transaction back itself (SQLITE_FULL, SQLITE_IOERR)

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"database unavailable: {exc}") from exc

    # ---------------------------------------------------------------- recovery
    def recover(self) -> tuple[int, int]:
        """After a crash: running jobs and sending exports go back to queued.

        Returns
        -------
        (jobs_requeued, exports_requeued)
        """
        now = time.time()
        with self._tx() as c:
            jobs = c.execute(
                "UPDATE jobs SET state='queued', worker_pid=NULL, updated_at=? WHERE state='running'", (now,)
            ).rowcount
            exports = c.execute(
                "UPDATE exports SET state='queued', next_attempt_at=?, updated_at=? WHERE state='sending'",
                (now, now),
            ).rowcount
        for stale in self.tmp_dir.glob(".*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass
        return jobs, exports

    # ---------------------------------------------------------------- instances
    def spool_path(self, study_uid: str, sop_uid: str) -> Path:
        return self.spool_dir / uid_filename(study_uid) / f"{uid_filename(sop_uid)}.dcm"

    def has_instance(self, sop_uid: str) -> bool:
        return bool(self._query("SELECT 1 FROM instances WHERE sop_instance_uid=?", (sop_uid,)))

    def store_instance(
        self,
        data: bytes | memoryview | Path,
        *,
        sop_instance_uid: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_class_uid: str | None = None,
        transfer_syntax_uid: str | None = None,
        calling_ae: str | None = None,
        source: str = "dimse",
        on_changed: str = "replace",
    ) -> str:
        """Spool the received instance durably and record it.

        ``data``: the instance's bytes, or a finished file in ``tmp_dir`` (C-STORE receive) that is
        moved into the spool, or left where it is when not stored (its writer removes it).

        ``on_changed`` (``[study] on_changed_duplicate``) decides for a known SOP Instance UID
        that comes again with other bytes or under another study: ``replace`` it, ``keep`` the
        first, or ``reject`` the new one.

        Returns
        -------
        ``"stored"``, ``"reopened"`` (stored, and its study had already been completed, so it will
        run again), ``"duplicate"`` (the same bytes again: nothing written), ``"replaced"`` (changed
        and replaced: its study, and a study it left, run again), ``"kept"`` (changed, the first
        kept) or ``"rejected"`` (changed, refused).

        Raises
        ------
        StoreError
            On any disk or database failure; nothing half-stored is left visible.
        """
        row = self._query("SELECT study_instance_uid, path FROM instances WHERE sop_instance_uid=?",
                          (sop_instance_uid,))
        ids = (sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid, transfer_syntax_uid,
               calling_ae, source)
        if row:
            if self._same_content(row[0], data, study_instance_uid):
                return "duplicate"
            if on_changed != "replace":
                return "kept" if on_changed == "keep" else "rejected"
            # A new file name beside the old: a failed commit leaves the first version intact.
            target = self.spool_path(study_instance_uid, sop_instance_uid)
            target = target.with_name(f"{target.stem}.{time.time_ns()}.dcm")
        else:
            target = self.spool_path(study_instance_uid, sop_instance_uid)
        try:
            size = byte_size(data)
            if isinstance(data, Path):
                move_durably(data, target)
            else:
                atomic_write(target, data, tmp_dir=self.tmp_dir)
        except OSError as exc:
            raise StoreError(f"cannot write spool file {target}: {exc.strerror or exc}") from exc
        try:
            result = self._record_instance(target, size, ids, replacing=row[0] if row else None)
        except StoreError:
            self._drop_unrecorded(target, sop_instance_uid, row[0]["path"] if row else None)
            raise
        if row and result == "replaced" and row[0]["path"] != str(target.relative_to(self.data_dir)):
            (self.data_dir / row[0]["path"]).unlink(missing_ok=True)
        return result

    def _same_content(self, row: sqlite3.Row, data: bytes | memoryview | Path, study_uid: str) -> bool:
        if row["study_instance_uid"] != study_uid:
            return False
        try:  # the data set, not the File Meta: the same instance by C-STORE and by STOW-RS is the same
            return same_body(self.data_dir / row["path"], data)
        except OSError:
            return False  # the spooled copy is gone or unreadable: the new one takes its place

    def _drop_unrecorded(self, target: Path, sop_uid: str, old_path: str | None = None) -> None:
        """After a failed commit: remove the spool file unless a row (another association's) names it."""
        try:
            rows = self._query("SELECT path FROM instances WHERE sop_instance_uid=?", (sop_uid,))
            if rows and rows[0]["path"] != old_path:
                return
        except StoreError:
            return  # cannot tell: an orphan file is better than a lost instance
        try:
            target.unlink()
        except OSError:
            pass

    def _record_instance(self, target: Path, size: int, ids: tuple, replacing: sqlite3.Row | None = None) -> str:
        """The instance's row, and its study's, in one transaction; ``stored``/``reopened``/``duplicate``/``replaced``.

        ``ids``: SOP Instance, Study, Series, SOP Class and Transfer Syntax UIDs, calling AE, source.
        """
        now = time.time()
        rel = str(target.relative_to(self.data_dir))
        study_uid = ids[1]
        with self._tx() as c:
            if replacing is not None:
                c.execute(
                    "UPDATE instances SET study_instance_uid=?, series_instance_uid=?, sop_class_uid=?, "
                    "transfer_syntax_uid=?, calling_ae=?, source=?, path=?, size_bytes=?, received_at=? "
                    "WHERE sop_instance_uid=?", (*ids[1:], rel, size, now, ids[0]))
                old_study = replacing["study_instance_uid"]
                if old_study != study_uid:  # the study it left changed too: it runs again
                    c.execute("UPDATE studies SET state='receiving', last_received_at=? WHERE study_instance_uid=? "
                              "AND EXISTS (SELECT 1 FROM instances WHERE study_instance_uid=?)",
                              (now, old_study, old_study))
                self._touch_study(c, study_uid, now)
                return "replaced"
            inserted = c.execute("INSERT OR IGNORE INTO instances VALUES (?,?,?,?,?,?,?,?,?,?)",
                                 (*ids, rel, size, now)).rowcount
            if not inserted:  # a concurrent association stored the same instance first
                return "duplicate"
            return self._touch_study(c, study_uid, now)

    @staticmethod
    def _touch_study(c: sqlite3.Connection, study_uid: str, now: float) -> str:
        """The study receives again (created if new); ``reopened`` when it had been completed, else ``stored``."""
        row = c.execute("SELECT state FROM studies WHERE study_instance_uid=?", (study_uid,)).fetchone()
        if row is None:
            c.execute("INSERT INTO studies VALUES (?, 'receiving', ?, ?, 0)", (study_uid, now, now))
            return "stored"
        c.execute("UPDATE studies SET state='receiving', last_received_at=? WHERE study_instance_uid=?",
                  (now, study_uid))
        return "reopened" if row["state"] == "complete" else "stored"

    def study_instances(self, study_uid: str) -> list[InstanceRecord]:
        rows = self._query(
            "SELECT * FROM instances WHERE study_instance_uid=? ORDER BY received_at, sop_instance_uid", (study_uid,)
        )
        return [InstanceRecord(**dict(r)) for r in rows]

    # ---------------------------------------------------------------- studies and jobs
    def complete_due_studies(self, quiet_period_seconds: float, now: float | None = None) -> list[Job]:
        """Mark studies quiet for ``quiet_period_seconds`` complete and queue one job each.

        A queued (not yet running) job of an earlier run of the same study is superseded.
        """
        now = time.time() if now is None else now
        cutoff = now - quiet_period_seconds
        created = []
        with self._tx() as c:
            due = c.execute(
                "SELECT study_instance_uid, runs FROM studies WHERE state='receiving' AND last_received_at<=?",
                (cutoff,),
            ).fetchall()
            for row in due:
                study, run = row["study_instance_uid"], row["runs"] + 1
                c.execute(
                    "UPDATE studies SET state='complete', runs=? WHERE study_instance_uid=?", (run, study)
                )
                c.execute(
                    "UPDATE jobs SET state='superseded', updated_at=? WHERE study_instance_uid=? AND state='queued'",
                    (now, study),
                )
                cur = c.execute(
                    "INSERT INTO jobs (study_instance_uid, run, state, created_at, updated_at) "
                    "VALUES (?, ?, 'queued', ?, ?)",
                    (study, run, now, now),
                )
                created.append(Job(cur.lastrowid, study, run, "queued", 0, None, None, now, now))
        return created

    def next_study_due_at(self, quiet_period_seconds: float) -> float | None:
        """When (Unix time, s) the earliest receiving study becomes quiet; None without one."""
        rows = self._query("SELECT MIN(last_received_at) AS t FROM studies WHERE state='receiving'")
        return None if not rows or rows[0]["t"] is None else float(rows[0]["t"]) + quiet_period_seconds

    def claim_job(self, worker_pid: int) -> Job | None:
        """Take the oldest queued job whose study has no running job (atomically), or None."""
        now = time.time()
        with self._tx() as c:
            # One job per study at a time: a re-run waits for the earlier run to finish, so it
            # knows the SRs it replaces.
            row = c.execute(
                "SELECT id FROM jobs j WHERE state='queued' AND NOT EXISTS ("
                "  SELECT 1 FROM jobs r WHERE r.study_instance_uid=j.study_instance_uid AND r.state='running')"
                " ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            c.execute(
                "UPDATE jobs SET state='running', worker_pid=?, attempts=attempts+1, updated_at=?, started_at=? WHERE id=?",
                (worker_pid, now, now, row["id"]),
            )
            return Job(**dict(c.execute("SELECT * FROM jobs WHERE id=?", (row["id"],)).fetchone()))

    def job(self, job_id: int) -> Job | None:
        rows = self._query("SELECT * FROM jobs WHERE id=?", (job_id,))
        return Job(**dict(rows[0])) if rows else None

    def previous_sr_uids(self, study_uid: str, before_run: int) -> list[str]:
        """SR UIDs of the latest finished earlier run of this study (the SRs a re-run replaces)."""
        rows = self._query(
            "SELECT o.sop_instance_uid FROM outputs o JOIN jobs j ON o.job_id=j.id "
            "WHERE j.study_instance_uid=? AND j.state='done' AND o.kind='SR' AND j.run=("
            "  SELECT MAX(run) FROM jobs WHERE study_instance_uid=? AND state='done' AND run<?)"
            " ORDER BY o.sop_instance_uid",
            (study_uid, study_uid, before_run),
        )
        return [r["sop_instance_uid"] for r in rows]

    def finish_job(
        self, job_id: int, outputs: list[tuple[str, str, str, str]],
        destinations: Collection[str] | Mapping[str, Collection[str]], billing: BillingFacts | None = None,
    ) -> int:
        """Record a job's outputs ``(sop_uid, sop_class_uid, kind, path)``, queue one export per
        (output, destination), record the run's billing row and mark the job done, in one transaction.

        ``destinations``: names (every output goes to each), or name -> the output kinds it takes
        (``SR``, ``SC``, ``PDF``). Returns the number of exports queued (an export already present,
        e.g. after a re-run of a job interrupted by a crash, is kept as it is: re-sending never duplicates).
        """
        now = time.time()
        queued = 0
        kinds_of = destinations if isinstance(destinations, Mapping) else {d: None for d in destinations}
        with self._tx() as c:
            job = c.execute("SELECT study_instance_uid, run FROM jobs WHERE id=?", (job_id,)).fetchone()
            for uid, sop_class, kind, path in outputs:
                c.execute(
                    "INSERT OR REPLACE INTO outputs VALUES (?,?,?,?,?,?)",
                    (uid, job_id, job["study_instance_uid"], sop_class, kind, path),
                )
                for dest, kinds in kinds_of.items():
                    if kinds is not None and kind not in kinds:
                        continue
                    queued += c.execute(
                        "INSERT OR IGNORE INTO exports (output_sop_instance_uid, destination, state, attempts, "
                        "next_attempt_at, updated_at) VALUES (?, ?, 'queued', 0, ?, ?)",
                        (uid, dest, now, now),
                    ).rowcount
            if billing is not None:
                record_billing(c, job_id, job["study_instance_uid"], job["run"], billing, now)
            c.execute(
                "UPDATE jobs SET state='done', last_error=NULL, updated_at=? WHERE id=?", (now, job_id)
            )
        return queued

    def running_jobs(self) -> list[Job]:
        return [Job(**dict(r)) for r in self._query("SELECT * FROM jobs WHERE state='running' ORDER BY id")]

    def fail_job(self, job_id: int, error: str) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE jobs SET state='failed', last_error=?, updated_at=? WHERE id=?",
                (error[:2000], time.time(), job_id),
            )

    def requeue_worker_jobs(self, worker_pid: int, max_attempts: int, why: str = "died") -> list[Job]:
        """Jobs left running by a worker that died: queued again, or failed after ``max_attempts``.

        ``why`` completes "the worker process ... while running this job" (e.g. "died",
        "was stopped after the 600 s job timeout").
        """
        now = time.time()
        changed = []
        with self._tx() as c:
            rows = c.execute("SELECT * FROM jobs WHERE state='running' AND worker_pid=?", (worker_pid,)).fetchall()
            for r in rows:
                if r["attempts"] >= max_attempts:
                    state, err = "failed", f"the worker process {why} while running this job ({r['attempts']} attempts)"
                else:
                    state, err = "queued", f"the worker process {why} while running this job"
                c.execute(
                    "UPDATE jobs SET state=?, worker_pid=NULL, last_error=?, updated_at=? WHERE id=?",
                    (state, err, now, r["id"]),
                )
                changed.append(Job(**{**dict(r), "state": state, "last_error": err}))
        return changed
