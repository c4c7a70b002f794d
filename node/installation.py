"""The node installation UID: made once, kept in ``<data_dir>/installation-uid``, part of every output UID.

Output SOP Instance and Series UIDs are derived from (installation UID, Study Instance UID, run,
what the output is) under ``[outputs] uid_root`` when set (an organisation's registered root),
else pydicom's root. So a second node, or this node reinstalled with a fresh data_dir, never
makes the same UID for different content, while a re-send of the same run gives the same UID.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

__all__ = ["INSTALLATION_FILE", "installation_uid", "log_installation"]

INSTALLATION_FILE = "installation-uid"


def installation_uid(data_dir: Path, uid_root: str | None = None) -> str:
    """The installation UID in ``data_dir``, created (random, under ``uid_root``) on first use.

    Safe against concurrent first calls (serve and its workers): the file is written to a temp
    name, fsynced and hard-linked into place; whoever links first wins and everyone reads that.
    """
    path = Path(data_dir) / INSTALLATION_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    uid = generate_uid(prefix=f"{uid_root}." if uid_root else None)
    tmp = path.with_name(f".{INSTALLATION_FILE}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(uid + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path.read_text(encoding="ascii").strip()


def log_installation(config: Any) -> str:
    """``dxr-node serve`` at start: make (once) and log the installation UID; returns it."""
    from node.report.options import output_options

    root = output_options(config).uid_root
    uid = installation_uid(config.data_dir, root)
    logging.getLogger("dxr.node").info("event=installation uid=%s uid_root=%s", uid, root or "pydicom")
    return uid
