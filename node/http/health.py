"""Readiness for ``/readyz``: is the spool writable, the disk above its watermark, the database answering?"""

from __future__ import annotations

import os
import threading
from typing import Any

from node.config import Config
from node.disk import DiskWatermark
from node.http import metrics
from node.spool import Store

__all__ = ["readiness"]


def _spool_writable(store: Store) -> tuple[bool, str]:
    probe = store.tmp_dir / f".readyz-{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return False, f"spool {store.tmp_dir} is not writable ({exc.strerror or exc})"
    # Spool files are written in tmp_dir and renamed into spool_dir: both must be writable.
    if not os.access(store.spool_dir, os.W_OK | os.X_OK):
        return False, f"spool {store.spool_dir} is not writable"
    return True, f"spool {store.spool_dir} is writable"


def readiness(config: Config, store: Store, disk: DiskWatermark) -> tuple[bool, dict[str, Any]]:
    """(ready, the ``/readyz`` body): spool writable, disk above the watermark, SQLite answering."""
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    ok, msg = _spool_writable(store)
    checks["spool"] = {"ok": ok, "message": msg}
    if not ok:
        reasons.append(msg)
    state = disk.check()
    checks["disk"] = {**state.to_json(), "message": state.message}
    if not state.ok:
        reasons.append(f"refusing new data: {state.message}")
    destinations: dict[str, Any] = {}
    try:
        snap = metrics.read_snapshot(config.db_path)
        checks["database"] = {"ok": True, "message": f"{config.db_path} answers"}
        checks["queue_depth"] = snap.queue_depth
        for dest in config.destinations:
            last = snap.last_export.get(dest.name)
            destinations[dest.name] = {"type": dest.type, "last_export": last,
                                       "ok": last is None or last["state"] != "failed"}
    except Exception as exc:  # sqlite3.Error, OSError: say what, never a traceback
        msg = f"database {config.db_path} cannot be read ({exc})"
        checks["database"] = {"ok": False, "message": msg}
        reasons.append(msg)
    checks["destinations"] = destinations
    failed = [name for name, d in destinations.items() if not d["ok"]]
    # A destination whose exports failed does not stop the node receiving (results wait in
    # the queue for `dxr-node queue retry`), so it is a warning, not unreadiness.
    warnings = [f"destination {name!r}: last export failed ({destinations[name]['last_export']['last_error']})"
                for name in failed]
    body = {"ready": not reasons, "reasons": reasons, "warnings": warnings, "checks": checks}
    return not reasons, body
