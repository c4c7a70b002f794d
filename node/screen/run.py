"""``dxr-node screen``: the client side of a screen on a Dask cluster.

The client lists the inputs (files, or QIDO-RS on the PACS), drops those already in the output
folder, and keeps a bounded number of tasks on the cluster (never the whole archive at once).
Each finished task's row goes to the :class:`~node.screen.results.ResultWriter`; a worker that
dies has its tasks re-run elsewhere by the Dask scheduler (up to its ``allowed-failures``; after
that the image's row is an ``error`` with reason ``worker_lost``). Every input gets one row.
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from hashlib import sha1
from pathlib import Path
from typing import Any

from node.verbs import CLIError
from node.screen.results import ResultWriter, existing_keys, read_results
from node.screen.summary import SUMMARY_COLUMNS, followup_from_table, summarise, write_followup
from node.screen.worker import ScreenPlugin, error_row, screen_item

__all__ = ["ScreenOptions", "run_screen", "Progress"]

log = logging.getLogger("dxr.screen")

CONNECT_TIMEOUT_SECONDS = 15.0
TASKS_PER_WORKER_THREAD = 4
"""Tasks kept on the cluster per worker thread: enough to keep every core busy, not the archive."""


@dataclass
class ScreenOptions:
    """Everything one ``dxr-node screen`` run needs (validated by the verb)."""

    out_dir: Path
    items: list[dict[str, Any]]
    reference: Any
    pixel_spacing_mm: float | None = None
    dest: Any = None
    scheduler: str | None = None
    workers: int = 1
    limit: int | None = None
    threshold: float = -2.5
    progress: bool = True
    batch_rows: int = 1000
    batch_seconds: float = 30.0
    skipped: int = field(default=0, init=False)


class Progress:
    """One line on stderr about every ``interval`` seconds: done/total, errors, images/s, ETA."""

    def __init__(self, total: int, enabled: bool, interval_seconds: float = 2.0):
        self.total, self.enabled, self.interval = total, enabled, interval_seconds
        self.done = self.errors = 0
        self.started = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta == eta else "--:--:--"
        return (f"screen: {self.done}/{self.total} images, {self.errors} errors, {rate:.2f} images/s, "
                f"ETA {eta_text}")

    def step(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.errors += row.get("status") == "error"
        now = time.monotonic()
        if self.enabled and (now - self.last >= self.interval or self.done == self.total):
            self.last = now
            sys.stderr.write(("\r" + self.line().ljust(79)) if self.tty else self.line() + "\n")
            if self.tty and self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def _quiet_dask_logs() -> None:
    """Dask's own log lines (tracebacks on a lost connection) off this terminal: the run says it in one line."""
    names = [n for n in logging.root.manager.loggerDict if n == "distributed" or n.startswith("distributed.")]
    for name in ["distributed", *names]:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _open_client(options: ScreenOptions) -> tuple[Any, Any]:
    """``(client, cluster or None)``: the given scheduler, or a new LocalCluster of worker processes."""
    from distributed import Client, LocalCluster

    _quiet_dask_logs()
    if options.scheduler:
        try:
            return Client(options.scheduler, timeout=CONNECT_TIMEOUT_SECONDS), None
        except (OSError, ValueError) as exc:  # refused, timed out, a malformed address
            raise CLIError(f"cannot reach the Dask scheduler at {options.scheduler}: {type(exc).__name__}: "
                           f"{str(exc)[:200]}") from None
    # One thread per process: the analysis is CPU-bound Python/numba, processes use the cores.
    cluster = LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster), cluster


class ClusterLost(Exception):
    """The cluster cancelled a task (scheduler lost): the run stops, the image gets no error row."""


def _task_key(run_id: str, item_key: str) -> str:
    return f"dxr-screen-{run_id}-{sha1(item_key.encode()).hexdigest()}"


def _result_row(future: Any, item: dict[str, Any]) -> dict[str, Any]:
    """The task's row, or an error row when Dask gave up on it (worker lost too often, ...)."""
    from distributed import KilledWorker

    try:
        return future.result()
    except CancelledError:  # the scheduler is gone (or the run is stopping): not this image's fault
        raise ClusterLost(future.key) from None
    except KilledWorker:
        return error_row(item, "worker_lost", "The Dask workers analysing this image died repeatedly.")
    except Exception as exc:  # pickling or another task failure: this image's row says so, the run goes on
        return error_row(item, "analysis_error", f"The Dask task failed ({type(exc).__name__}: {str(exc)[:200]}).")


def _screen_items(client: Any, items: list[dict[str, Any]], writer: ResultWriter, progress: Progress) -> None:
    """Run every item on the cluster, at most a window of tasks at a time; rows to ``writer``."""
    from distributed import as_completed

    threads = max(sum(client.nthreads().values()), 1)
    window = TASKS_PER_WORKER_THREAD * threads
    pending = iter(items)
    by_key: dict[str, dict[str, Any]] = {}
    done_keys: set[str] = set()
    running = as_completed()

    def submit_next() -> None:
        item = next(pending, None)
        if item is not None:
            future = client.submit(screen_item, item, writer.run_id, key=_task_key(writer.run_id, item["key"]),
                                   retries=0)
            by_key[future.key] = item
            running.add(future)

    for _ in range(window):
        submit_next()
    for future in running:
        item = by_key.pop(future.key)
        row = _result_row(future, item)
        future.release()
        if item["key"] not in done_keys:  # one row per input, whatever the cluster did
            done_keys.add(item["key"])
            writer.add(row)
            progress.step(row)
        submit_next()


def _unregister(client: Any, name: str) -> None:
    """Take this run's plugin (and its state) off a cluster that outlives the run; best effort."""
    try:
        client.unregister_worker_plugin(name)
    except Exception:  # never registered, or the cluster is gone: nothing left to clean
        pass


def _finish(out_dir: Path, threshold: float) -> str:
    """Write ``followup.csv`` from every row in ``out_dir``; the summary text."""
    table = read_results(out_dir, SUMMARY_COLUMNS)
    followup = followup_from_table(table, threshold)
    write_followup(out_dir / "followup.csv", followup)
    return summarise(table, threshold, followup)


def run_screen(options: ScreenOptions) -> int:
    """Screen ``options.items`` into ``options.out_dir``; print the summary; returns the exit status."""
    done = existing_keys(options.out_dir)
    todo = [item for item in options.items if item["key"] not in done]
    options.skipped = len(options.items) - len(todo)
    if options.limit is not None:
        todo = todo[:options.limit]
    say = print if options.progress else (lambda *a, **k: None)
    say(f"dxr-node screen: {len(options.items)} inputs, {options.skipped} already in {options.out_dir}, "
        f"{len(todo)} to screen", file=sys.stderr, flush=True)
    writer = ResultWriter(options.out_dir, options.batch_rows, options.batch_seconds)
    if todo:
        client, cluster = _open_client(options)
        try:
            say(f"dxr-node screen: Dask scheduler {client.scheduler.address}, "
                f"{len(client.nthreads())} workers", file=sys.stderr, flush=True)
            plugin = ScreenPlugin(writer.run_id, options.reference,
                                  {"pixel_spacing_mm": options.pixel_spacing_mm, "dest": options.dest})
            client.register_plugin(plugin)
            progress = Progress(len(todo), options.progress)
            try:
                _screen_items(client, todo, writer, progress)
            except ClusterLost:
                raise CLIError(f"lost the Dask cluster after {progress.done} of {len(todo)} images; the rows written "
                               "are kept, run the same command again to go on") from None
        finally:
            writer.close()  # what arrived is kept, even when the run is interrupted
            _unregister(client, f"dxr-screen-{writer.run_id}")
            client.close()
            if cluster is not None:
                cluster.close()
    print(_finish(options.out_dir, options.threshold))
    print(f"new rows: {writer.rows_written}; results in {options.out_dir / 'results'}; "
          f"follow-up list {options.out_dir / 'followup.csv'}")
    return 0
