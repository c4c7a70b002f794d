"""The reference set for T- and Z-scores: ``[reference] dir`` + ``table`` loaded once, one-line errors.

``[reference] table = "black2001"`` picks ``<dir>/black2001.csv`` (one set: both sexes, the
young-adult rows for T and the age bands for Z). Without ``table`` every ``*.csv`` in ``dir``
is loaded together (the layout of earlier releases: a site folder of its own tables).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.reference import load_reference_tables

from node.config import Config

__all__ = ["DEFAULT_TABLE", "ReferenceTablesError", "available_tables", "load_reference", "load_reference_dir"]

DEFAULT_TABLE = "black2001"
"""The shipped default set (``config/node.toml``, ``dxr-node analyze``): ρ is anchored to its mean."""


class ReferenceTablesError(ValueError):
    """The reference tables cannot be loaded (message is one line)."""


def load_reference(config: Config) -> Any:
    """The reference set from ``[reference]``, or None when none is configured.

    Raises
    ------
    ValueError
        One line naming the folder or file when the set is missing or invalid.
    """
    return load_reference_dir(config.reference.dir, config.reference.table)


def available_tables(ref_dir: Path) -> list[str]:
    return sorted(p.stem for p in ref_dir.glob("*.csv"))


def load_reference_dir(ref_dir: Path | None, table: str | None = None) -> Any:
    """The set ``table`` in ``ref_dir`` (or every ``*.csv`` there when ``table`` is None), or None.

    Also ``dxr-node analyze --reference-dir/--reference``. Raises :class:`ReferenceTablesError`
    (one line naming the folder or file) when the set cannot be read or is invalid, and when a
    named ``table`` does not exist.
    """
    if ref_dir is None:
        return None
    if table is not None:
        path = ref_dir / f"{table}.csv"
        if not path.is_file():
            known = ", ".join(available_tables(ref_dir)) if ref_dir.is_dir() else "folder missing"
            raise ReferenceTablesError(f"{path}: reference set {table!r} not found (available: {known or 'none'})")
        files = [path]
    else:
        if not ref_dir.is_dir():
            return None
        files = sorted(ref_dir.glob("*.csv"))
        if not files:
            return None
    where = files[0] if table is not None else ref_dir
    try:
        return load_reference_tables([f.read_text(encoding="utf-8") for f in files],
                                     name=table or (files[0].stem if len(files) == 1 else ref_dir.name))
    except Exception as exc:
        raise ReferenceTablesError(f"{where}: reference tables are invalid ({exc})") from exc
