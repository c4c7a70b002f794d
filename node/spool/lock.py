"""One node per data_dir: an exclusive lock file (``data_dir/node.lock``) holding the serving PID.

``dxr-node serve`` takes it before the database is opened, so a second node on the same
data_dir stops at once with a one-line error naming the running PID; it never runs
``Store.recover()`` under a live node (which would re-queue that node's running jobs and
exports in flight). The lock is an ``flock`` on an open file: the kernel releases it when the
process ends, however it ends (kill -9 included), so a stale lock file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

__all__ = ["DataDirBusy", "lock_data_dir"]


class DataDirBusy(OSError):
    """Another process holds the data_dir lock."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data_dir lock and write our PID into it; returns the open file (close it to release)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "node.lock"
    fh = open(path, "a+", encoding="ascii")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "unknown"
        fh.close()
        raise DataDirBusy(f"data_dir {data_dir} is in use by another dxr-node (PID {pid}); "
                          "stop it first or give this one another --data-dir") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh
