"""Typed reading of one TOML table of the config file, naming the file and the key in every error."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "Section", "path_value", "resolve_path"]

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII except backslash


class ConfigError(ValueError):
    """A one-line, user-facing configuration error."""


class Section:
    """Typed access to one TOML table that names the key in every error."""

    def __init__(self, cfg_path: Path, name: str, table: Any, known: set[str] | None):
        self.cfg_path = cfg_path
        self.name = name
        if not isinstance(table, dict):
            self.fail(f"{name} must be a table")
        self.table = table
        if known is not None:
            for key in table:
                if key not in known:
                    self.fail(f"{name} has unknown key {key!r} (known: {', '.join(sorted(known))})")

    def fail(self, message: str) -> None:
        raise ConfigError(f"{self.cfg_path}: {message}")

    def _bad(self, key: str, expected: str, value: Any) -> None:
        self.fail(f"{self.name} {key} must be {expected}, got {_show(value)}")

    def str(self, key: str, default: Any = None, *, required: bool = False, allow_empty: bool = False) -> Any:
        if key not in self.table:
            if required:
                self.fail(f"{self.name} {key} is required")
            return default
        value = self.table[key]
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            self._bad(key, "a non-empty string", value)
        return value

    def int(self, key: str, default: Any, lo: int, hi: int | None = None, *, required: bool = False) -> Any:
        if key not in self.table:
            if required:
                self.fail(f"{self.name} {key} is required")
            return default
        value = self.table[key]
        expected = f"an integer {lo}-{hi}" if hi is not None else f"an integer >= {lo}"
        if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
            self._bad(key, expected, value)
        return value

    def number(self, key: str, default: float, lo: float, *, exclusive: bool = False) -> float:
        if key not in self.table:
            return default
        value = self.table[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (value > lo if exclusive else value >= lo)
        if not ok:
            self._bad(key, f"a number {'>' if exclusive else '>='} {lo:g}", value)
        return float(value)

    def bool(self, key: str, default: bool) -> bool:
        if key not in self.table:
            return default
        value = self.table[key]
        if not isinstance(value, bool):
            self._bad(key, "true or false", value)
        return value

    def ae(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        value = self.str(key, default, required=required)
        if value is not None and not _AE_RE.match(value.strip() or "\\"):
            self._bad(key, "an AE title of 1-16 printable ASCII characters without backslash", value)
        return value.strip() if value is not None else None


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def resolve_path(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def path_value(section: Section, key: str, base: Path) -> Path | None:
    """An optional path key, resolved against the config file's folder."""
    value = section.str(key)
    return resolve_path(base, value) if value else None
