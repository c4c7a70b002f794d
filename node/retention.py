"""Retention: delete the files (and rows) of delivered studies after ``[retention] keep_days``, or
early, oldest delivery first, when the disk runs low; ``dxr-node purge [--dry-run]``.

A study is *delivered* when it is complete, its latest run's job is ``done``, nothing of it is
queued or running, and every export of its outputs is ``sent``; its delivery time is the
last of those. Nothing else is ever deleted: a study still receiving, analysing, sending, or
with a failed job or export stays until it is delivered (or retried by hand).

Purging a study deletes its ``instances``, ``outputs`` and ``exports`` rows, then their files:
``spool/``, ``outputs/`` and the copies in folder destinations. The ``studies`` and ``jobs``
rows stay (a few bytes): a re-sent instance re-opens the study with the next run number, so
new outputs never reuse an old UID. Rows go first (one transaction), files after: a crash
between leaves orphan files, never rows pointing at missing files. A spool file replaced since
(a re-send that raced the purge: new inode) is left alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from node.config import Config, ConfigError, load_config
from node.disk import free_bytes
from node.export.folder import folder_target
from node.spool import Store, StoreError

__all__ = ["Retention", "StudyFiles", "due_studies", "purge_study", "run_purge"]

log = logging.getLogger("dxr.retention")

_DELIVERED = """
SELECT s.study_instance_uid AS study, max(COALESCE(MAX(e.updated_at), 0), j.updated_at) AS delivered_at
FROM studies s
JOIN jobs j ON j.study_instance_uid = s.study_instance_uid AND j.run = s.runs AND j.state = 'done'
LEFT JOIN outputs o ON o.study_instance_uid = s.study_instance_uid
LEFT JOIN exports e ON e.output_sop_instance_uid = o.sop_instance_uid
WHERE s.state = 'complete'
  AND NOT EXISTS (SELECT 1 FROM jobs q WHERE q.study_instance_uid = s.study_instance_uid
                  AND q.state IN ('queued', 'running'))
  AND NOT EXISTS (SELECT 1 FROM outputs o2 JOIN exports e2 ON e2.output_sop_instance_uid = o2.sop_instance_uid
                  WHERE o2.study_instance_uid = s.study_instance_uid AND e2.state != 'sent')
  AND (EXISTS (SELECT 1 FROM instances i WHERE i.study_instance_uid = s.study_instance_uid)
       OR EXISTS (SELECT 1 FROM outputs o3 WHERE o3.study_instance_uid = s.study_instance_uid))
GROUP BY s.study_instance_uid
ORDER BY delivered_at, s.study_instance_uid
"""


@dataclass(frozen=True)
class StudyFiles:
    study: str
    delivered_at: float
    files: tuple[Path, ...]

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files if p.exists())


def _files(config: Config, store: Store, study: str) -> tuple[Path, ...]:
    rows = store._query("SELECT path FROM instances WHERE study_instance_uid=? UNION ALL "
                        "SELECT path FROM outputs WHERE study_instance_uid=?", (study, study))
    paths = [store.data_dir / r["path"] for r in rows]
    folders = [d for d in config.destinations if d.type == "folder" and d.path is not None]
    for r in store._query("SELECT sop_instance_uid FROM outputs WHERE study_instance_uid=?", (study,)):
        paths += [folder_target(d, study, r["sop_instance_uid"]) for d in folders]
    return tuple(paths)


def due_studies(config: Config, store: Store, now: float | None = None, *, low_disk: bool = False) -> list[StudyFiles]:
    """Delivered studies to purge, oldest delivery first: past ``keep_days``, or all of them when ``low_disk``."""
    now = time.time() if now is None else now
    keep = config.retention.keep_days
    due = []
    for r in store._query(_DELIVERED):
        if low_disk or (keep and r["delivered_at"] <= now - keep * 86400):
            due.append(StudyFiles(r["study"], r["delivered_at"], _files(config, store, r["study"])))
    return due


def purge_study(config: Config, store: Store, study: StudyFiles) -> int:
    """Delete one delivered study's rows, then its files; returns the files deleted (0 if no longer delivered)."""
    inodes = {p: _inode(p) for p in study.files}
    with store._tx() as c:
        still = c.execute("SELECT 1 FROM studies WHERE study_instance_uid=? AND state='complete' AND NOT EXISTS ("
                          "SELECT 1 FROM jobs WHERE study_instance_uid=? AND state IN ('queued','running'))",
                          (study.study, study.study)).fetchone()
        if still is None:  # an instance arrived meanwhile: the study is live again
            return 0
        c.execute("DELETE FROM exports WHERE output_sop_instance_uid IN "
                  "(SELECT sop_instance_uid FROM outputs WHERE study_instance_uid=?)", (study.study,))
        c.execute("DELETE FROM outputs WHERE study_instance_uid=?", (study.study,))
        c.execute("DELETE FROM instances WHERE study_instance_uid=?", (study.study,))
    deleted = 0
    for path, inode in inodes.items():
        if inode is not None and _inode(path) == inode:
            path.unlink(missing_ok=True)
            deleted += 1
            try:
                path.parent.rmdir()  # the study folder, once empty
            except OSError:
                pass
    log.info("event=study_purged study=%s delivered_at=%s files=%d", study.study,
             time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(study.delivered_at)), deleted)
    return deleted


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _threshold(config: Config) -> int:
    return config.retention.purge_below_free_bytes or config.disk.min_free_bytes


def purge(config: Config, store: Store, now: float | None = None) -> int:
    """One retention pass: studies past ``keep_days``, then early ones while the disk is low; studies purged."""
    purged = 0
    for study in due_studies(config, store, now):
        purged += bool(purge_study(config, store, study))
    threshold = _threshold(config)
    if threshold and free_bytes(store.data_dir) < threshold:
        for study in due_studies(config, store, now, low_disk=True):
            if free_bytes(store.data_dir) >= threshold:
                break
            log.warning("event=early_purge study=%s reason=%r", study.study, f"free space below {threshold} bytes")
            purged += bool(purge_study(config, store, study))
    return purged


class Retention(threading.Thread):
    """Background thread of ``serve``: a retention pass every ``interval_seconds``."""

    def __init__(self, config: Config, store: Store, stop: threading.Event, interval_seconds: float = 60.0):
        super().__init__(name="retention", daemon=True)
        self.config, self.store, self.stop, self.interval_seconds = config, store, stop, interval_seconds

    def run(self) -> None:
        while not self.stop.wait(self.interval_seconds):
            try:
                purge(self.config, self.store)
            except (StoreError, OSError) as exc:
                log.error("event=retention_error error=%r", str(exc))


def run_purge(args: argparse.Namespace) -> int:
    """``dxr-node purge [--dry-run]``: one retention pass now, or the list of what it would delete."""
    try:
        config = load_config(args.config, data_dir=args.data_dir)
        store = Store(config.data_dir)
    except (ConfigError, StoreError) as exc:
        print(f"dxr-node: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    threshold = _threshold(config)
    low = bool(threshold) and free_bytes(config.data_dir) < threshold
    studies = due_studies(config, store, low_disk=low)
    if not args.dry_run:
        n = purge(config, store)
        print(f"purged {n} studies")
        return 0
    for s in studies:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.delivered_at))
        print(f"{s.study} delivered={when} files={len(s.files)} bytes={s.size_bytes}")
    print(f"would purge {len(studies)} studies" + (" (free space below the threshold: early purge)" if low else ""))
    return 0
