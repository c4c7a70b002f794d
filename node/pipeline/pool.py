"""The worker pool: ``[node] workers`` spawned processes, job timeouts, dead workers replaced and their jobs re-queued."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from typing import Any

from node.config import Config
from node.pipeline.doorbell import Doorbell
from node.spool import Store, StoreError

__all__ = ["MAX_JOB_ATTEMPTS", "StopFlag", "WorkerPool"]

log = logging.getLogger("dxr.worker")

MAX_JOB_ATTEMPTS = 3
"""A job whose worker process dies this many times is marked failed (e.g. a crashing decoder)."""

RESPAWN_MIN_SECONDS = 2.0
"""A dead worker is replaced no sooner than this after its own start (no respawn storm)."""


def _worker_process(config: Config, stop: Any, index: int, parent_pid: int, bells: tuple[Doorbell, Doorbell]) -> None:
    """Entry point of a spawned worker process."""
    from node.pipeline.worker import worker_main  # spawn boundary: analysis and the report load in workers only

    worker_main(config, stop, index, parent_pid, jobs_bell=bells[0], exports_bell=bells[1])


class StopFlag:
    """A lock-free stop flag shared with spawned workers.

    Not a ``multiprocessing.Event``: a worker killed while inside the Event's lock (SIGTERM or
    SIGKILL to the process group, OOM) would leave it held, and the parent's ``set()`` would
    then block shutdown forever. A raw shared byte cannot deadlock.
    """

    def __init__(self, ctx: Any):
        self._value = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)


class WorkerPool:
    """``config.node.workers`` spawned processes, restarted when one dies.

    ``jobs_bell`` is rung (by the assembler) when a job is queued and wakes one idle worker;
    workers ring ``exports_bell`` (the exporter's) when a job has queued its exports.
    """

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store
        self.ctx = multiprocessing.get_context("spawn")
        self.stop_event = StopFlag(self.ctx)
        self.procs: list[Any] = [None] * config.node.workers
        self.spawned_at: list[float] = [0.0] * config.node.workers
        self.timed_out: dict[int, str] = {}
        self.jobs_bell, self.exports_bell = Doorbell(), Doorbell()

    def _spawn(self, index: int) -> None:
        p = self.ctx.Process(
            target=_worker_process,
            args=(self.config, self.stop_event, index, os.getpid(), (self.jobs_bell, self.exports_bell)),
            name=f"dxr-worker-{index}",
            daemon=True,
        )
        p.start()
        self.procs[index] = p
        self.spawned_at[index] = time.monotonic()

    def start(self) -> None:
        for i in range(len(self.procs)):
            self._spawn(i)

    def _stop_overdue_jobs(self) -> None:
        """Kill the worker of any job running longer than ``[node] job_timeout_seconds``."""
        timeout = self.config.node.job_timeout_seconds
        ours = {p.pid: p for p in self.procs if p is not None and p.is_alive()}
        try:
            running = self.store.running_jobs()
        except StoreError:
            return
        now = time.time()
        for job in running:
            started = job.started_at or job.updated_at
            if job.worker_pid in ours and now - started > timeout and job.worker_pid not in self.timed_out:
                log.error(
                    "event=job_timeout job=J%d study=%s worker_pid=%d seconds=%.0f",
                    job.id, job.study_instance_uid, job.worker_pid, now - started,
                )
                self.timed_out[job.worker_pid] = f"was stopped after the {timeout:g} s job timeout"
                ours[job.worker_pid].kill()

    def monitor(self) -> None:
        """Stop overdue jobs; restart dead workers, whose running job goes back to the queue
        (or fails after ``MAX_JOB_ATTEMPTS``)."""
        if self.stop_event.is_set():
            return
        self._stop_overdue_jobs()
        for i, p in enumerate(self.procs):
            if p is not None and not p.is_alive():
                why = self.timed_out.pop(p.pid, None)
                if why is None and time.monotonic() - self.spawned_at[i] < RESPAWN_MIN_SECONDS:
                    continue  # died right after start (e.g. broken install): don't spin, retry shortly
                log.error("event=worker_died worker=%d pid=%s exitcode=%s", i, p.pid, p.exitcode)
                for job in self.store.requeue_worker_jobs(p.pid, MAX_JOB_ATTEMPTS, why or "died"):
                    log.warning(
                        "event=job_%s job=J%d study=%s reason=%r",
                        "requeued" if job.state == "queued" else "failed", job.id, job.study_instance_uid, job.last_error,
                    )
                self._spawn(i)

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Ask workers to finish their current job and exit; terminate them after the timeout.

        A terminated worker's job stays ``running`` in SQLite and is queued again at the next start.
        """
        self.stop_event.set()
        deadline = time.monotonic() + timeout_seconds
        for p in self.procs:
            if p is not None:
                p.join(max(deadline - time.monotonic(), 0.1))
        for p in self.procs:
            if p is not None and p.is_alive():
                log.warning("event=worker_terminated pid=%d reason='still busy at shutdown; its job runs again at next start'", p.pid)
                p.terminate()
                p.join(2)
                if p.is_alive():
                    p.kill()
                    p.join(2)
