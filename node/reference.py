"""The reference tables for T- and Z-scores: ``[reference] dir`` (or a folder given) loaded once, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.reference import load_reference_tables

from node.config import Config

__all__ = ["ReferenceTablesError", "load_reference", "load_reference_dir"]


class ReferenceTablesError(ValueError):
    """The reference tables cannot be loaded (message is one line)."""


def load_reference(config: Config) -> Any:
    """The reference tables from ``[reference] dir`` (``*.csv``), or None when there are none.

    Raises
    ------
    ValueError
        One line naming the folder when the tables exist but are invalid.
    """
    return load_reference_dir(config.reference.dir)


def load_reference_dir(ref_dir: Path | None) -> Any:
    """The reference tables in the folder ``ref_dir`` (``*.csv``), or None when it has none.

    Also ``dxr-node analyze --reference-dir``. Raises :class:`ReferenceTablesError` (one line
    naming the folder) when the tables exist but cannot be read or are invalid.
    """
    if ref_dir is None or not ref_dir.is_dir():
        return None
    files = sorted(ref_dir.glob("*.csv"))
    if not files:
        return None
    try:
        return load_reference_tables([f.read_text(encoding="utf-8") for f in files])
    except Exception as exc:
        raise ReferenceTablesError(f"{ref_dir}: reference tables are invalid ({exc})") from exc
