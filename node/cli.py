"""``dxr-node``: the node's command line.

Verbs::

    dxr-node serve --config FILE [--port N] [--data-dir DIR]
    dxr-node check-config FILE
    dxr-node echo DESTINATION --config FILE
    dxr-node rules test FILE.dcm --config FILE
    dxr-node queue list --config FILE [--data-dir DIR] [--json]
    dxr-node queue retry ID --config FILE [--data-dir DIR]      (ID: E<n> export, J<n> job, <n> export)
    dxr-node analyze ...                                        (node/research.py)
    dxr-node locate PATH... [--pixel-spacing MM] [--overlay-dir DIR] (node/research.py)

Every error is one line on stderr (``dxr-node: error: ...``) and a non-zero exit status:
1 for a failed operation, 2 for bad usage or configuration. Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import Any

from node import research
from node.config import Config, ConfigError, load_config

__all__ = ["main", "build_parser"]

DEFAULT_CONFIG = "config/node.toml"
MONITOR_INTERVAL_SECONDS = 0.5
"""How often ``serve`` checks the worker pool (overdue jobs, dead workers)."""
STOP_POLL_SECONDS = 0.1
"""How often ``serve`` looks whether SIGTERM/SIGINT arrived (the longest delay before stopping)."""

log = logging.getLogger("dxr.node")


class CLIError(Exception):
    """A one-line error for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line (``main`` adds the ``dxr-node: error:`` prefix)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{message} (see {self.prog} --help)", 2)


# ---------------------------------------------------------------------------------- helpers
def _config(args: argparse.Namespace) -> Config:
    """The config named by ``args.config`` with the ``--port``/``--data-dir`` overrides a verb has."""
    try:
        return load_config(args.config, port=getattr(args, "port", None), data_dir=getattr(args, "data_dir", None))
    except ConfigError as exc:
        raise CLIError(str(exc), 2) from None


def _store(config: Config):
    from node.spool import Store, StoreError

    try:
        return Store(config.data_dir)
    except StoreError as exc:
        raise CLIError(str(exc)) from None


def _one_line(text: str | None) -> str:
    return " ".join(text.split()) if text else "-"


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "-"


# ---------------------------------------------------------------------------------- serve
def _start_http(config: Config, store: Any) -> Any:
    """Hook for the DICOMweb/health/metrics server (issue 6).

    When ``[http]`` is configured, ``node.dicomweb.start_http_server(config, store)`` is called
    and must return an object with ``.stop()``; it shares the receive path through
    ``node.ingest.ingest``. Returns None when ``[http]`` is absent.
    """
    if config.http is None:
        return None
    from node.http.server import start_http_server

    try:
        return start_http_server(config, store)
    except ConfigError as exc:
        raise CLIError(str(exc), 2) from None
    except OSError as exc:
        raise CLIError(f"cannot listen on {config.http.bind}:{config.http.port} (HTTP): {exc.strerror or exc}") from None


def _validate_at_start(config: Config) -> Any:
    """What the file alone cannot tell: reference tables and [outputs] options; returns the tables."""
    from node.reference import load_reference
    from node.report.options import output_options

    try:
        reference = load_reference(config)  # workers load their own copy
        output_options(config, strict=True)
    except ValueError as exc:  # ConfigError and reference-table errors: one line each
        raise CLIError(str(exc), 2) from None
    return reference


def cmd_serve(args: argparse.Namespace) -> int:
    from node.pipeline.assembler import Assembler
    from node.receive.scp import start_scp
    from node.export.exporter import Exporter
    from node.log import setup_logging
    from node.pipeline.pool import WorkerPool

    config = _config(args)
    setup_logging()
    _validate_at_start(config)
    store = _store(config)
    jobs, exports = store.recover()
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
    assembler = Assembler(store, config.study.quiet_period_seconds, stop)
    exporter = Exporter(config, store, stop)
    try:
        http = _start_http(config, store)
        pool.start()
        assembler.start()
        exporter.start()
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
        scp.shutdown()
        if http is not None:
            http.stop()
        for thread in (assembler, exporter):
            if thread.is_alive():
                thread.join(30)
        pool.stop()
        store.close()
        log.info("event=node_stopped")
    return 0


# ---------------------------------------------------------------------------------- small verbs
def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    ref = _validate_at_start(config)
    dests = ", ".join(f"{d.name} ({d.type})" for d in config.destinations) or "none"
    print(
        f"{config.path}: OK (ae_title {config.node.ae_title}, port {config.node.port}, data_dir {config.data_dir}, "
        f"{len(config.sources)} sources, destinations: {dests}, reference tables: {'yes' if ref is not None else 'no'})"
    )
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        dest = config.destination(args.destination)
    except ConfigError as exc:
        raise CLIError(str(exc), 2) from None
    if dest.type == "dimse":
        from node.export.scu import echo

        ok, message = echo(dest, config.export.calling_ae_title or config.node.ae_title, args.timeout)
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
    else:
        ok, message = _echo_dicomweb(dest, args.timeout)
    if not ok:
        raise CLIError(message)
    print(message)
    return 0


def _echo_dicomweb(dest: Any, timeout_seconds: float) -> tuple[bool, str]:
    """A DICOMweb destination answers an authenticated QIDO-RS ``GET {url}/studies?limit=1``."""
    import requests

    from node.export.stow import make_client

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
    import pydicom

    from node.receive.ingest import instance_problem
    from node.receive.rules import evaluate

    config = _config(args)
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


def _parse_id(text: str) -> tuple[str, int]:
    t = text.strip().upper()
    kind = "job" if t.startswith("J") else "export"
    digits = t[1:] if t[:1] in ("J", "E") else t
    if not digits.isdigit():
        raise CLIError(f"queue retry: ID must look like E12 (export) or J3 (job), got {text!r}", 2)
    return kind, int(digits)


def cmd_queue_list(args: argparse.Namespace) -> int:
    config = _config(args)
    store = _store(config)
    jobs, exports = store.list_jobs(), store.list_exports()
    store.close()
    if args.state:
        jobs = [j for j in jobs if j.state == args.state]
        exports = [e for e in exports if e.state == args.state]
    if args.json:
        print(json.dumps({
            "jobs": [{"id": f"J{j.id}", **asdict(j)} | {"id": f"J{j.id}", "job_id": j.id} for j in jobs],
            "exports": [{"id": f"E{e.id}", **asdict(e)} | {"id": f"E{e.id}", "export_id": e.id} for e in exports],
        }, indent=1))
        return 0
    print(f"JOBS ({len(jobs)})")
    print(f"{'ID':<6} {'STATE':<10} {'RUN':>3} {'ATT':>3} {'UPDATED':<20} {'STUDY':<64} LAST_ERROR")
    for j in jobs:
        print(f"{'J' + str(j.id):<6} {j.state:<10} {j.run:>3} {j.attempts:>3} {_fmt_time(j.updated_at):<20} "
              f"{j.study_instance_uid:<64} {_one_line(j.last_error)}")
    print(f"EXPORTS ({len(exports)})")
    print(f"{'ID':<6} {'STATE':<8} {'DESTINATION':<14} {'ATT':>3} {'NEXT_ATTEMPT':<20} {'OUTPUT':<64} LAST_ERROR")
    for e in exports:
        nxt = _fmt_time(e.next_attempt_at) if e.state == "queued" else "-"
        print(f"{'E' + str(e.id):<6} {e.state:<8} {e.destination:<14} {e.attempts:>3} {nxt:<20} "
              f"{e.output_sop_instance_uid:<64} {_one_line(e.last_error)}")
    return 0


def cmd_queue_retry(args: argparse.Namespace) -> int:
    kind, num = _parse_id(args.id)
    config = _config(args)
    store = _store(config)
    try:
        if kind == "export":
            e = store.retry_export(num)
            if e is None:
                raise CLIError(f"queue retry: no export E{num} (see dxr-node queue list)")
            if e.state == "sent":
                raise CLIError(f"queue retry: export E{num} was already sent to {e.destination}; nothing to retry")
            print(f"export E{num} to {e.destination}: {e.state} (it is sent by the running node)")
        else:
            j = store.retry_job(num)
            if j is None:
                raise CLIError(f"queue retry: no job J{num} (see dxr-node queue list)")
            if j.state in ("done", "superseded"):
                raise CLIError(f"queue retry: job J{num} is {j.state}; nothing to retry")
            print(f"job J{num} for study {j.study_instance_uid}: {j.state} (it runs in the running node)")
    finally:
        store.close()
    return 0


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dxr-node", description="DXR Node: digital X-ray radiogrammetry DICOM node.")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    sub.required = True

    def config_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", default=DEFAULT_CONFIG, metavar="FILE", help=f"TOML config (default {DEFAULT_CONFIG})")

    s = sub.add_parser("serve", help="run the node: DIMSE SCP, study assembler, workers, exporter")
    config_opt(s)
    s.add_argument("--port", type=int, help="DIMSE port (overrides [node] port)")
    s.add_argument("--data-dir", help="spool/database/outputs folder (overrides [node] data_dir)")
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("config", metavar="FILE")
    c.set_defaults(func=cmd_check_config)

    e = sub.add_parser("echo", help="C-ECHO a configured destination (folder: check it is writable)")
    e.add_argument("destination", metavar="DESTINATION")
    config_opt(e)
    e.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    e.set_defaults(func=cmd_echo)

    r = sub.add_parser("rules", help="explain the analysis filter")
    rsub = r.add_subparsers(dest="rules_verb", metavar="ACTION", parser_class=_Parser)
    rsub.required = True
    rt = rsub.add_parser("test", help="say whether the node would analyse FILE.dcm, and why")
    rt.add_argument("file", metavar="FILE.dcm")
    config_opt(rt)
    rt.set_defaults(func=cmd_rules_test)

    q = sub.add_parser("queue", help="jobs and exports")
    qsub = q.add_subparsers(dest="queue_verb", metavar="ACTION", parser_class=_Parser)
    qsub.required = True
    ql = qsub.add_parser("list", help="jobs and exports with state, attempts and last error")
    config_opt(ql)
    ql.add_argument("--data-dir", help="overrides [node] data_dir")
    ql.add_argument("--json", action="store_true", help="machine-readable output")
    ql.add_argument("--state", choices=("queued", "running", "done", "failed", "superseded", "sending", "sent"),
                    help="only jobs and exports in this state")
    ql.set_defaults(func=cmd_queue_list)
    qr = qsub.add_parser("retry", help="re-queue a failed export (E<n>) or job (J<n>)")
    qr.add_argument("id", metavar="ID")
    config_opt(qr)
    qr.add_argument("--data-dir", help="overrides [node] data_dir")
    qr.set_defaults(func=cmd_queue_retry)

    research.add_analyze_parser(sub)
    research.add_locate_parser(sub)
    return p


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
