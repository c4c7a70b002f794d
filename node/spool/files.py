"""Crash-safe files: UID-derived file names and the write-fsync-rename that every spool and output file takes."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

__all__ = ["atomic_write", "dataset_body", "uid_filename"]

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def uid_filename(uid: str) -> str:
    """A safe file-name stem for a UID (UIDs are digits and dots; anything else is hashed)."""
    if _UID_RE.match(uid) and len(uid) <= 64:
        return uid
    return "x" + hashlib.sha1(uid.encode("utf-8", "replace")).hexdigest()


def dataset_body(data: bytes | memoryview) -> bytes | memoryview:
    """The data set after the preamble and File Meta group (which differ between senders and protocols).

    Relies on the File Meta's (0002,0000) group length, which the writers we see always give;
    without it, the whole file is returned.
    """
    view = memoryview(data)
    if bytes(view[128:132]) != b"DICM" or bytes(view[132:138]) != b"\x02\x00\x00\x00UL":
        return view
    group_length = int.from_bytes(view[140:144], "little")
    return view[144 + group_length:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_durable_dirs: set[Path] = set()
_durable_lock = threading.Lock()


def _make_durable_dir(path: Path) -> None:
    """Create ``path`` if needed and make its entry durable: fsync of its parent, once per process.

    A study folder created for its first instance must survive a power loss with that
    instance, so the folder's own directory entry is fsynced too, not only the file's.
    """
    with _durable_lock:
        # The folder may have gone since (retention purged the study, data_dir was wiped): one
        # stat per write keeps the cache from pointing at a folder that no longer exists.
        if path in _durable_dirs and path.is_dir():
            return
        path.mkdir(parents=True, exist_ok=True)
        _fsync_dir(path.parent)
        _durable_dirs.add(path)


def atomic_write(target: Path, data: bytes | memoryview, *, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``target`` so that it is either absent or complete, even after a crash.

    Temp file in ``tmp_dir`` (same filesystem), fsync, atomic rename, fsync of the directory
    (and, the first time, of the directory's parent).
    """
    _make_durable_dir(target.parent)
    tmp_dir = tmp_dir or target.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
