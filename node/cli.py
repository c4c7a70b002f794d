"""``dxr-node``: the node's command line.

Every verb, with its arguments and handler, is one entry of :data:`VERBS` (``dxr-node --help``
lists them); a module with verbs of its own exports a tuple of :class:`node.verbs.Verb` that
``VERBS`` includes (``queue`` in ``node/spool/verbs.py``, ``screen`` in ``node/screen/verbs.py``);
``analyze`` and ``locate`` run in ``node/research.py``.

Every error is one line on stderr (``dxr-node: error: ...``) and a non-zero exit status:
1 for a failed operation, 2 for bad usage or configuration. Never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import Any

import pydicom
import requests

from node import research
from node.config import Config, ConfigError
from node.export.exporter import Exporter
from node.export.scu import echo
from node.export.stow import make_client
from node.http.server import start_http_server
from node.log import setup_logging
from node.pipeline.assembler import Assembler
from node.pipeline.pool import WorkerPool
from node.receive.ingest import instance_problem
from node.receive.rules import evaluate
from node.receive.scp import start_scp
from node.installation import log_installation
from node.reference import load_reference
from node.retention import Retention, run_purge
from node.retrieve.verbs import REQUEST_VERBS
from node.screen.verbs import SCREEN_VERBS
from node.spool.verbs import BILLING_VERBS, QUEUE_VERBS
from node.verbs import (
    CONFIG, DATA_DIR, NO_PROGRESS, PATHS, PIXEL_SPACING, CLIError, Verb, arg, config_from_args, open_store,
)

__all__ = ["main", "build_parser"]

MONITOR_INTERVAL_SECONDS = 0.5
"""How often ``serve`` checks the worker pool (overdue jobs, dead workers)."""
STOP_POLL_SECONDS = 0.1
"""How often ``serve`` looks whether SIGTERM/SIGINT arrived (the longest delay before stopping)."""

log = logging.getLogger("dxr.node")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line (``main`` adds the ``dxr-node: error:`` prefix)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{message} (see {self.prog} --help)", 2)


# ---------------------------------------------------------------------------------- serve
def _start_http(config: Config, store: Any) -> Any:
    """The STOW-RS/health/metrics server (``node.http``, has ``.stop()``) when ``[http]`` is set, else None."""
    if config.http is None:
        return None
    try:
        return start_http_server(config, store)
    except ConfigError as exc:
        raise CLIError(str(exc), 2) from None
    except OSError as exc:
        raise CLIError(f"cannot listen on {config.http.bind}:{config.http.port} (HTTP): {exc.strerror or exc}") from None


def _validate_at_start(config: Config) -> Any:
    """What the file alone cannot tell: reference tables and [outputs] options; returns the tables."""
    # node.report pulls in highdicom and the numba kernels (seconds): only serve and check-config need it.
    from node.report.options import output_options

    try:
        reference = load_reference(config)  # workers load their own copy
        output_options(config, strict=True)
    except ValueError as exc:  # ConfigError and reference-table errors: one line each
        raise CLIError(str(exc), 2) from None
    return reference


def cmd_serve(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    setup_logging()
    store = open_store(config, exclusive=True)  # one node per data_dir, before anything touches the database
    _validate_at_start(config)
    jobs, exports = store.recover()
    log_installation(config)
    log.info(
        "event=node_starting ae_title=%s port=%d data_dir=%s workers=%d quiet_period_seconds=%g "
        "recovered_jobs=%d recovered_exports=%d",
        config.node.ae_title, config.node.port, config.data_dir, config.node.workers,
        config.study.quiet_period_seconds, jobs, exports,
    )
    if not config.sources:
        log.warning("event=config_warning detail='no [[sources]] configured: every association will be rejected'")
    stop = threading.Event()
    stop_signals: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        # Only an append here: the handler runs in the main thread between bytecodes, and
        # stop.set() takes the Event's non-reentrant lock, which the interrupted code may hold
        # (a deadlock). The main loop below sees the signal, logs it and stops.
        stop_signals.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        scp = start_scp(config, store)
    except OSError as exc:
        raise CLIError(f"cannot listen on {config.node.bind}:{config.node.port}: {exc.strerror or exc}") from None
    http = None
    pool = WorkerPool(config, store)
    assembler = Assembler(store, config.study.quiet_period_seconds, stop, jobs_bell=pool.jobs_bell)
    exporter = Exporter(config, store, stop, bell=pool.exports_bell)
    retention = Retention(config, store, stop)
    try:
        http = _start_http(config, store)
        pool.start()
        assembler.start()
        exporter.start()
        retention.start()
        log.info("event=node_ready ae_title=%s port=%d", config.node.ae_title, config.node.port)
        next_monitor = 0.0
        while not stop_signals:
            if time.monotonic() >= next_monitor:
                next_monitor = time.monotonic() + MONITOR_INTERVAL_SECONDS
                try:
                    pool.monitor()
                except Exception as exc:  # the database may be busy or failing: keep serving, say so
                    log.error("event=monitor_error error=%r", f"{type(exc).__name__}: {exc}")
            time.sleep(STOP_POLL_SECONDS)
        log.info("event=node_stopping signal=%s", signal.Signals(stop_signals[0]).name)
    finally:
        stop.set()
        pool.exports_bell.ring()  # the exporter waits on it: let it see ``stop`` now
        scp.shutdown()
        if http is not None:
            http.stop()
        for thread in (assembler, exporter, retention):
            if thread.is_alive():
                thread.join(30)
        pool.stop()
        store.close()
        log.info("event=node_stopped")
    return 0


# ---------------------------------------------------------------------------------- small verbs
def cmd_check_config(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    print(config.summary(_validate_at_start(config)))
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        dest = config.destination(args.destination)
    except ConfigError as exc:
        raise CLIError(str(exc), 2) from None
    if dest.type == "dimse":
        ok, message = echo(dest, config.export.calling_ae_title or config.node.ae_title, args.timeout, config.tls)
    elif dest.type == "folder":
        assert dest.path is not None
        try:
            dest.path.mkdir(parents=True, exist_ok=True)
            probe = dest.path / ".dxr-echo"
            probe.write_bytes(b"")
            probe.unlink()
            ok, message = True, f"{dest.name} (folder {dest.path}): writable"
        except OSError as exc:
            ok, message = False, f"{dest.name} (folder {dest.path}): not writable ({exc.strerror or exc})"
    elif dest.type == "hl7":
        from node.export.mllp import echo_hl7

        ok, message = echo_hl7(dest, args.timeout)
    else:
        ok, message = _echo_dicomweb(dest, args.timeout)
    if not ok:
        raise CLIError(message)
    print(message)
    return 0


def _echo_dicomweb(dest: Any, timeout_seconds: float) -> tuple[bool, str]:
    """A DICOMweb destination answers an authenticated QIDO-RS ``GET {url}/studies?limit=1``."""
    where = f"{dest.name} ({dest.url})"
    try:
        make_client(dest, timeout_seconds).search_for_studies(limit=1)
    except requests.exceptions.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else "?"
        return False, f"{where}: QIDO-RS answered HTTP {code}"
    except (requests.exceptions.RequestException, ValueError) as exc:
        return False, f"{where}: {type(exc).__name__}: {str(exc)[:200]}"
    return True, f"{where}: QIDO-RS success"


def cmd_rules_test(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        try:
            ds = pydicom.dcmread(args.file, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            # No preamble/DICM: accept a bare data set only if it looks like one.
            ds = pydicom.dcmread(args.file, stop_before_pixels=True, force=True)
            if "SOPClassUID" not in ds and "Modality" not in ds:
                raise CLIError(f"{args.file}: not a DICOM file") from None
    except CLIError:
        raise
    except FileNotFoundError:
        raise CLIError(f"{args.file}: no such file") from None
    except Exception as exc:
        raise CLIError(f"{args.file}: not readable as DICOM ({type(exc).__name__}: {exc})") from None
    decision = evaluate(config.rules, ds)
    if not decision.analyse:
        print(f"DROP {args.file}: {decision.reason}")
        return 0
    problem = instance_problem(ds, check_pixels=False)
    if problem:
        print(f"REFUSE {args.file}: {decision.reason}, but the receiver refuses it: {problem[1]}")
        return 0
    print(f"ANALYSE {args.file}: {decision.reason}")
    return 0


# ---------------------------------------------------------------------------------- parser
GROUPS = {"rules": "explain the analysis filter", "queue": "jobs and exports", "billing": "the billing record"}
"""Help text of each verb group (the word before the space in :data:`VERBS` names)."""

VERBS: tuple[Verb, ...] = (
    Verb("serve", "run the node: DIMSE SCP, study assembler, workers, exporter", (
        CONFIG,
        arg("--port", type=int, help="DIMSE port (overrides [node] port)"),
        arg("--data-dir", help="spool/database/outputs folder (overrides [node] data_dir)"),
    ), cmd_serve),
    Verb("check-config", "validate a config file", (arg("config", metavar="FILE"),), cmd_check_config),
    Verb("echo", "C-ECHO a configured destination (folder: check it is writable; hl7: connect)", (
        arg("destination", metavar="DESTINATION"), CONFIG,
        arg("--timeout", type=float, default=10.0, help="seconds (default 10)"),
    ), cmd_echo),
    Verb("rules test", "say whether the node would analyse FILE.dcm, and why",
         (arg("file", metavar="FILE.dcm"), CONFIG), cmd_rules_test),
    Verb("purge", "delete delivered studies past [retention] keep_days (or early when the disk is low)", (
        CONFIG, DATA_DIR,
        arg("--dry-run", action="store_true", help="only list what would be deleted"),
    ), run_purge),
    *QUEUE_VERBS,
    *BILLING_VERBS,
    *REQUEST_VERBS,
    Verb("analyze", "measure hand radiographs (DICOM, PNG, JPEG, folders); JSON Lines on stdout", (
        PATHS,
        PIXEL_SPACING,
        arg("--sex", type=str.upper, choices=("F", "M"), help="overrides PatientSex"),
        arg("--age", type=float, metavar="YEARS", help="overrides PatientAge"),
        arg("--overlay-dir", metavar="DIR", help="write one PNG per input with bones, ROIs and edges"),
        arg("--dicom-out", metavar="DIR", help="write the SR (+ SC picture) per DICOM input"),
        arg("--reference-dir", metavar="DIR", default=None,
            help=f"reference tables (*.csv) for T/Z-scores (default {research.DEFAULT_REFERENCE_DIR})"),
        arg("--reference", metavar="NAME", help="reference set NAME.csv (default black2001 in the shipped folder)"),
        NO_PROGRESS,
    ), research.run_analyze,
        "Measure metacarpals II-IV on hand radiographs and print one JSON object per file."),
    Verb("locate", "find the hand, its view, maturity and metacarpals (no measurement); JSON Lines on stdout", (
        PATHS,
        PIXEL_SPACING,
        arg("--overlay-dir", metavar="DIR", help="write one PNG per input with what the finder found"),
        NO_PROGRESS,
    ), research.run_locate,
        f"Run the hand finder alone on radiographs (pixels up to {research.LOCATE_MAX_SPACING_MM:g} mm) and print one "
        "JSON object per file."),
    *SCREEN_VERBS,
)
"""Every verb of ``dxr-node``, in ``--help`` order; adding a verb is adding an entry."""


def build_parser() -> argparse.ArgumentParser:
    """The ``dxr-node`` parser built from :data:`VERBS`; each verb sets ``func`` to its handler."""
    parser = _Parser(prog="dxr-node", description="DXR Node: digital X-ray radiogrammetry DICOM node.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True
    groups: dict[str, Any] = {}
    for verb in VERBS:
        group, _, name = verb.name.rpartition(" ")
        where = verbs
        if group:
            if group not in groups:
                actions = verbs.add_parser(group, help=GROUPS[group])
                groups[group] = actions.add_subparsers(dest=f"{group}_verb", metavar="ACTION", parser_class=_Parser)
                groups[group].required = True
            where = groups[group]
        sub = where.add_parser(name, help=verb.help, description=verb.description)
        for arg in verb.args:
            sub.add_argument(*arg.flags, **arg.options)
        sub.set_defaults(func=verb.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"dxr-node: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("dxr-node: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help and friends
        return int(exc.code or 0) if isinstance(exc.code, int) else 0
    except BrokenPipeError:
        return 1
    except Exception as exc:  # last resort: still one line, never a traceback
        print(f"dxr-node: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
