"""``dxr-node screen``: its arguments, their checks, and the inputs they name.

Only the standard library and :mod:`node.verbs` at the top (``dxr-node --help`` imports this);
Dask, pyarrow and the analysis are imported when the verb runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from node.verbs import NO_PROGRESS, PIXEL_SPACING, CLIError, Verb, arg

__all__ = ["SCREEN_VERBS", "cmd_screen"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def _archive(config: Any, name: str) -> Any:
    """The DICOMweb archive ``--from NAME``: a ``[[pacs]]`` entry (read only), else a ``[[destinations]]`` one."""
    for section, entries in (("[[pacs]]", config.pacs), ("[[destinations]]", config.destinations)):
        for entry in entries:
            if entry.name == name:
                if entry.type != "dicomweb":
                    raise CLIError(f"{config.path}: {section} {name!r} is of type {entry.type!r}; --from needs a "
                                   '"dicomweb" entry (QIDO-RS and WADO-RS)', 2)
                return entry
    known = ", ".join(e.name for e in (*config.pacs, *config.destinations) if e.type == "dicomweb") or "none"
    raise CLIError(f"{config.path}: no [[pacs]] or [[destinations]] entry named {name!r} (DICOMweb ones: {known})", 2)


def _config_and_dest(args: argparse.Namespace) -> tuple[Any, Any]:
    """The node config (or None) and the ``--from`` DICOMweb archive (or None)."""
    from node.config import ConfigError, load_config

    if args.config is None:
        if args.from_pacs:
            raise CLIError("--from needs --config FILE (the file with the [[pacs]] or [[destinations]] entry)", 2)
        return None, None
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise CLIError(str(exc), 2) from None
    return config, _archive(config, args.from_pacs) if args.from_pacs else None


def _reference(config: Any) -> Any:
    """The set of the config's ``[reference]``; without one the shipped default set (as analyze).

    A screen exists to find low T-scores: a config made for ``--from`` alone (no ``[reference]``)
    must not silently give rows without them.
    """
    from node.reference import DEFAULT_TABLE, load_reference, load_reference_dir
    from node.research import DEFAULT_REFERENCE_DIR

    try:
        if config is not None and config.reference.dir is not None:
            return load_reference(config)
        return load_reference_dir(DEFAULT_REFERENCE_DIR, DEFAULT_TABLE)
    except ValueError as exc:
        raise CLIError(str(exc), 2) from None


def _check_args(args: argparse.Namespace) -> None:
    if not args.paths and not args.from_pacs:
        raise CLIError("screen needs SOURCE folders/files or --from NAME (a DICOMweb PACS)", 2)
    if (args.since or args.until) and not args.from_pacs:
        raise CLIError("--since/--until select studies on a PACS: they need --from NAME", 2)
    if args.pixel_spacing is not None and not (0 < args.pixel_spacing < 10):
        raise CLIError("--pixel-spacing must be a positive pixel size in mm (e.g. 0.1)", 2)
    if args.scheduler and args.workers is not None:
        raise CLIError("--workers starts a local cluster; with --scheduler the cluster's own workers are used", 2)


def _pacs_items(args: argparse.Namespace, config: Any, dest: Any) -> list[dict[str, Any]]:
    """QIDO-RS: the PACS instances in the date range that the config's rules analyse."""
    import requests

    from node.dates import user_date
    from node.screen.sources import dicomweb_items

    try:
        since = user_date(args.since, "--since") if args.since else None
        until = user_date(args.until, "--until") if args.until else None
    except ValueError as exc:
        raise CLIError(str(exc), 2) from None
    if since and until and since > until:
        raise CLIError(f"--since {args.since} is after --until {args.until}", 2)
    try:
        items, dropped = dicomweb_items(dest, config.rules, since, until)
    except (requests.exceptions.RequestException, ValueError) as exc:
        raise CLIError(f"{dest.name} ({dest.url}): QIDO-RS query failed: {type(exc).__name__}: {str(exc)[:200]}")
    if not args.no_progress:
        print(f"dxr-node screen: {dest.name}: {len(items)} CR/DX instances to consider, {dropped} left out by the "
              "[[rules]]", file=sys.stderr, flush=True)
    return items


def cmd_screen(args: argparse.Namespace) -> int:
    """Run ``dxr-node screen``; returns the exit status."""
    _check_args(args)
    config, dest = _config_and_dest(args)
    reference = _reference(config)
    if not args.no_progress:
        print(f"dxr-node screen: reference {reference.summary() if reference is not None else 'none'}",
              file=sys.stderr, flush=True)
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    from node.export.stow import bearer_token
    from node.screen.run import ScreenOptions, run_screen
    from node.screen.sources import file_items

    items = file_items(list(args.paths)) if args.paths else []
    if dest is not None:
        try:  # the workers get the token itself: a token file may not exist on their machines
            dest = replace(dest, token=bearer_token(dest), token_file=None)
        except (OSError, ValueError) as exc:
            raise CLIError(f"{args.config}: {exc}", 2) from None
        items += _pacs_items(args, config, dest)
    options = ScreenOptions(out_dir=out_dir, items=items, reference=reference, pixel_spacing_mm=args.pixel_spacing,
                            dest=dest, scheduler=args.scheduler, workers=args.workers or os.cpu_count() or 1,
                            limit=args.limit, threshold=args.threshold, progress=not args.no_progress)
    try:
        return run_screen(options)
    except OSError as exc:
        raise CLIError(f"screen: {exc.strerror or exc} ({getattr(exc, 'filename', '') or out_dir})") from None


SCREEN_VERBS: tuple[Verb, ...] = (
    Verb("screen", "screen an archive on a Dask cluster (folders/files or a DICOMweb PACS) into Parquet", (
        arg("paths", nargs="*", metavar="SOURCE", help="DICOM/PNG/JPEG files or folders (recursed)"),
        arg("--out", required=True, metavar="DIR", help="output folder: results/ (Parquet), followup.csv"),
        arg("--from", dest="from_pacs", metavar="NAME",
            help='a [[pacs]] (or [[destinations]]) entry of type "dicomweb" to query'),
        arg("--since", metavar="DATE", help="--from: first StudyDate (YYYY-MM-DD, included)"),
        arg("--until", metavar="DATE", help="--from: last StudyDate (YYYY-MM-DD, included)"),
        arg("--config", metavar="FILE", help="node config: [[pacs]] for --from, [[rules]], [reference]"),
        arg("--scheduler", metavar="ADDRESS", help="Dask scheduler (tcp://host:8786); default: a local cluster"),
        arg("--workers", type=_positive_int, metavar="N", help="local cluster worker processes (default: cores)"),
        PIXEL_SPACING,
        arg("--limit", type=_positive_int, metavar="N", help="screen at most N images not yet in DIR"),
        arg("--threshold", type=float, default=-2.5, metavar="T",
            help="followup.csv lists patients whose lowest T-score is <= T (default -2.5)"),
        NO_PROGRESS,
    ), cmd_screen,
        "Analyse every hand radiograph of an archive on a Dask cluster: one Parquet row per image in DIR/results "
        "(a rerun skips what is there), a summary on stdout and DIR/followup.csv."),
)
"""The ``screen`` verb (``node/cli.py`` includes it)."""
