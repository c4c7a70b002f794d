"""What every ``dxr-node`` verb is made of: :class:`Verb`, its :class:`Arg` s, the shared
arguments, and the one-line :class:`CLIError`.

A module that offers verbs defines a tuple of :class:`Verb` (its handlers next to it) and
``node/cli.py`` joins the tuples into ``VERBS``. Keep imports at the top of such a module light
(``dxr-node --help`` imports all of them); import numba, highdicom and friends in the handler.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.config import Config, ConfigError, load_config
from node.spool import Store, StoreError

__all__ = [
    "CLIError", "Arg", "Verb", "arg", "config_from_args", "open_store", "one_line", "format_time",
    "CONFIG", "DATA_DIR", "PATHS", "PIXEL_SPACING", "NO_PROGRESS", "DEFAULT_CONFIG",
]

DEFAULT_CONFIG = "config/node.toml"


class CLIError(Exception):
    """A one-line error for the user; ``code`` is the exit status (1 failed, 2 bad usage or config)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call: its flags (or positional name) and keyword options."""

    flags: tuple[str, ...]
    options: dict[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    """An :class:`Arg` written like ``add_argument``."""
    return Arg(flags, options)


@dataclass(frozen=True)
class Verb:
    """One verb of ``dxr-node``; a name with a space (``queue list``) is an action of a group."""

    name: str
    help: str
    args: tuple[Arg, ...]
    handler: Callable[[argparse.Namespace], int]
    description: str | None = None


CONFIG = arg("--config", default=DEFAULT_CONFIG, metavar="FILE", help=f"TOML config (default {DEFAULT_CONFIG})")
DATA_DIR = arg("--data-dir", help="overrides [node] data_dir")
PATHS = arg("paths", nargs="+", metavar="PATH", help="DICOM/PNG/JPEG files or folders (recursed)")
PIXEL_SPACING = arg("--pixel-spacing", type=float, metavar="MM", help="pixel size in mm (overrides the header)")
NO_PROGRESS = arg("--no-progress", action="store_true", help="no progress bar on stderr")


def config_from_args(args: argparse.Namespace) -> Config:
    """The config named by ``args.config`` with the ``--port``/``--data-dir`` overrides a verb has."""
    try:
        return load_config(args.config, port=getattr(args, "port", None), data_dir=getattr(args, "data_dir", None))
    except ConfigError as exc:
        raise CLIError(str(exc), 2) from None


def open_store(config: Config, exclusive: bool = False) -> Store:
    """The node's spool database, or a :class:`CLIError` saying why it cannot be opened."""
    try:
        return Store(config.data_dir, exclusive=exclusive)
    except StoreError as exc:
        raise CLIError(str(exc)) from None


def one_line(text: str | None) -> str:
    """``text`` with its whitespace runs made single spaces, ``-`` when empty (table cells)."""
    return " ".join(text.split()) if text else "-"


def format_time(t: float | None) -> str:
    """A POSIX time as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC), ``-`` when unset."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "-"
