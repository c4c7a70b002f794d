"""Free-space watermark for the data disk.

Below ``[disk] min_free_bytes`` of free space on the filesystem that holds ``data_dir`` the
node refuses new data: the C-STORE handler answers 0xA700 (Refused: Out of Resources),
STOW-RS answers HTTP 507, and ``/readyz`` reports the node unready. It accepts again as soon
as the free space is back above the watermark; there is no latch.

The check is one ``statvfs`` call (a few microseconds), cheap enough to run per instance.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("dxr.node.disk")

def free_bytes(path: str | os.PathLike) -> int:
    """Bytes available to an unprivileged writer on the filesystem holding ``path``.

    ``path`` need not exist yet: the nearest existing parent is measured, so the check works
    before ``data_dir`` is created.
    """
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


@dataclass(frozen=True)
class DiskState:
    """One reading of the watermark."""

    path: str
    free_bytes: int
    min_free_bytes: int

    @property
    def ok(self) -> bool:
        """True when there is at least ``min_free_bytes`` of free space."""
        return self.free_bytes >= self.min_free_bytes

    @property
    def message(self) -> str:
        """One sentence for logs, ``/readyz`` and refusal messages."""
        relation = "above" if self.ok else "below"
        return (
            f"free space on {self.path} is {self.free_bytes} bytes, {relation} the "
            f"[disk] min_free_bytes watermark of {self.min_free_bytes} bytes"
        )

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "path": self.path,
            "free_bytes": self.free_bytes,
            "min_free_bytes": self.min_free_bytes,
        }


class DiskWatermark:
    """Checks free space against a watermark and logs each crossing once.

    Parameters
    ----------
    path
        A path on the filesystem to watch (the node's ``data_dir``).
    min_free_bytes
        Refuse new data below this many free bytes; 0 disables the refusal. The default is
        ``DiskConfig.min_free_bytes`` in ``node/config.py``, the only one.
    free_bytes_fn
        How free space is measured (bytes); defaults to :func:`free_bytes`.

    Thread-safe: the DIMSE handler threads and the HTTP server share one instance.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        min_free_bytes: int,
        *,
        free_bytes_fn: Callable[[str], int] = free_bytes,
    ) -> None:
        if min_free_bytes < 0:
            raise ValueError("min_free_bytes must be >= 0")
        self.path = str(path)
        self.min_free_bytes = int(min_free_bytes)
        self._free_bytes_fn = free_bytes_fn
        self._lock = threading.Lock()
        self._was_ok: bool | None = None

    def check(self) -> DiskState:
        """Measure now; log a WARNING when crossing below, INFO when back above."""
        try:
            free = int(self._free_bytes_fn(self.path))
        except OSError as exc:
            # An unreadable filesystem is as bad as a full one: refuse, and say why.
            log.error("event=disk_check_failed path=%s error=%r", self.path, str(exc))
            free = 0
        state = DiskState(self.path, free, self.min_free_bytes)
        with self._lock:
            changed = self._was_ok is not None and self._was_ok != state.ok
            first_bad = self._was_ok is None and not state.ok
            self._was_ok = state.ok
        if (changed or first_bad) and not state.ok:
            log.warning("event=disk_low action=refusing_new_data detail=%r", state.message)
        elif changed and state.ok:
            log.info("event=disk_ok action=accepting_new_data detail=%r", state.message)
        return state

    def accepting(self) -> bool:
        """True when new data may be accepted now."""
        return self.check().ok


_shared: dict[tuple[str, int], DiskWatermark] = {}
_shared_lock = threading.Lock()


def shared_watermark(path: str | os.PathLike, min_free_bytes: int) -> DiskWatermark:
    """The process's one :class:`DiskWatermark` for ``path`` and ``min_free_bytes``.

    The C-STORE handler, STOW-RS and ``/readyz`` share it, so a crossing is logged once.
    """
    key = (str(Path(path).absolute()), int(min_free_bytes))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = DiskWatermark(path, min_free_bytes)
        return _shared[key]
