"""SendResult: the one answer every sender (C-STORE, STOW-RS, folder) gives per output file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SendResult"]


@dataclass(frozen=True)
class SendResult:
    """What became of one output file sent to one destination; ``error`` says why when not ``ok``."""

    path: Path
    sop_instance_uid: str | None
    ok: bool
    error: str | None = None
