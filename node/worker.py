"""Jobs: worker processes that analyse complete studies and queue their outputs for export.

A job loads every instance of its study from the spool, calls ``analysis.analyse`` on each
(any exception becomes an ``error`` result with reason ``analysis_error``, logged), builds the
study's outputs with ``node.outputs.build_study_outputs`` (UID seed
``f"{study_uid}/{run}"``: deterministic, so re-running never duplicates), writes them under
``<data_dir>/outputs/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` and, in one transaction,
records them, queues one export per (output, destination) and marks the job done.

Workers are processes (``spawn``), so analysis never holds the SCP's GIL. A worker that dies
mid-job has its job queued again by :class:`WorkerPool` (up to ``MAX_JOB_ATTEMPTS``); a node
that dies mid-job has it queued again by ``Store.recover`` at the next start.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pydicom

from node.config import Config
from node.store import Job, Store, StoreError, atomic_write, uid_filename

__all__ = ["WorkerPool", "run_job", "load_reference", "load_reference_dir", "output_options", "ReferenceTablesError", "MAX_JOB_ATTEMPTS"]

log = logging.getLogger("dxr.worker")

MAX_JOB_ATTEMPTS = 3
"""A job whose worker process dies this many times is marked failed (e.g. a crashing decoder)."""

RESPAWN_MIN_SECONDS = 2.0
"""A dead worker is replaced no sooner than this after its own start (no respawn storm)."""


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
    from analysis.reference import load_reference_tables

    try:
        return load_reference_tables([f.read_text(encoding="utf-8") for f in files])
    except Exception as exc:
        raise ReferenceTablesError(f"{ref_dir}: reference tables are invalid ({exc})") from exc


def output_options(config: Config, reference: Any = None, *, strict: bool = False) -> Any:
    """``node.outputs.OutputOptions`` from ``[outputs]``.

    ``reference``: the loaded reference tables, for the SC picture's BMD-vs-age chart.
    ``strict``: an ``[outputs]`` key that is not an output option (or has the wrong type) raises
    :class:`node.config.ConfigError` naming it (serve and check-config validate at start);
    otherwise it is ignored with a log line.
    """
    import dataclasses

    from node.config import ConfigError
    from node.outputs import OutputOptions

    fields = {f.name: f for f in dataclasses.fields(OutputOptions)}
    names = set(fields) - {"reference"}
    values: dict[str, Any] = {"refusal_sr": config.outputs.refusal_sr, "picture": config.outputs.picture}
    if config.outputs.institution_name:
        values["institution_name"] = config.outputs.institution_name
    for key, value in config.outputs.extra:
        default = fields[key].default if key in names else None
        if key in names and (default is None or default is dataclasses.MISSING or isinstance(value, type(default))):
            values[key] = value
        elif strict:
            why = (f"must be a {type(default).__name__}, got {value!r}" if key in names
                   else f"is not an output option (known: {', '.join(sorted(names))})")
            raise ConfigError(f"{config.path}: [outputs] {key} {why}")
        else:
            log.warning("event=config_ignored key=[outputs].%s reason='not an output option of this build'", key)
    if reference is not None:
        values["reference"] = reference
    return OutputOptions(**{k: v for k, v in values.items() if k in names})


def _output_kind(sop_class_uid: str) -> str:
    if sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.88."):
        return "SR"
    if sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.7"):
        return "SC"
    return "other"


def _analyse_one(ds: pydicom.Dataset, reference: Any, job: Job, sop_uid: str):
    import analysis
    from analysis.result import AnalysisResult, REASON_MESSAGES

    started = time.monotonic()
    try:
        result = analysis.analyse(ds, reference=reference)
    except Exception as exc:  # a bad image must not stop the study: report it as unmeasured
        log.error(
            "event=analysis_error job=J%d study=%s sop=%s error=%r",
            job.id, job.study_instance_uid, sop_uid, f"{type(exc).__name__}: {exc}",
        )
        result = AnalysisResult(status="error", reason="analysis_error", message=REASON_MESSAGES["analysis_error"])
    log.info(
        "event=image_analysed job=J%d study=%s sop=%s status=%s reason=%s seconds=%.2f",
        job.id, job.study_instance_uid, sop_uid, result.status, result.reason, time.monotonic() - started,
    )
    return result


def run_job(store: Store, config: Config, job: Job, reference: Any = None) -> bool:
    """Run one claimed job to ``done`` or ``failed``; returns True when done."""
    try:
        instances = store.study_instances(job.study_instance_uid)
        images = []
        for inst in instances:
            path = store.data_dir / inst.path
            try:
                ds = pydicom.dcmread(path)
            except Exception as exc:
                log.error(
                    "event=instance_unreadable job=J%d study=%s sop=%s error=%r",
                    job.id, job.study_instance_uid, inst.sop_instance_uid, str(exc),
                )
                continue
            images.append((ds, _analyse_one(ds, reference, job, inst.sop_instance_uid)))
        if not images:
            raise RuntimeError(f"none of the study's {len(instances)} instances could be read from the spool")

        from node.outputs import build_study_outputs

        replaces = store.previous_sr_uids(job.study_instance_uid, job.run)
        outputs = build_study_outputs(
            images,
            uid_seed=f"{job.study_instance_uid}/{job.run}",
            options=output_options(config, reference=reference),
            replaces=replaces,
        )
        recorded = []
        for ds in outputs:
            uid, sop_class = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
            target = store.outputs_dir / uid_filename(job.study_instance_uid) / f"{uid_filename(uid)}.dcm"
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            atomic_write(target, buf.getbuffer(), tmp_dir=store.tmp_dir, fsync=store.fsync)
            recorded.append((uid, sop_class, _output_kind(sop_class), str(target.relative_to(store.data_dir))))
        queued = store.finish_job(job.id, recorded, [d.name for d in config.destinations])
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.error("event=job_failed job=J%d study=%s run=%d error=%r", job.id, job.study_instance_uid, job.run, error)
        try:
            store.fail_job(job.id, error)
        except StoreError as db_exc:
            log.error("event=job_state_lost job=J%d error=%r", job.id, str(db_exc))
        return False
    kinds = ",".join(k for _, _, k, _ in recorded) or "none"
    log.info(
        "event=job_done job=J%d study=%s run=%d images=%d outputs=%s exports_queued=%d replaces=%s",
        job.id, job.study_instance_uid, job.run, len(images), kinds, queued, ",".join(replaces) or "-",
    )
    return True


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this worker when the node process dies (no orphan keeps analysing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def worker_main(config: Config, stop, index: int, parent_pid: int, poll_seconds: float = 0.2) -> None:
    """Entry point of one worker process: claim jobs until ``stop`` is set."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    _die_with_parent(parent_pid)
    from node.log import setup_logging

    setup_logging(process_name=f"worker-{index}")
    try:
        store = Store(config.data_dir)
    except StoreError as exc:  # one log line, not multiprocessing's traceback; the pool respawns it
        log.error("event=worker_failed worker=%d error=%r", index, str(exc))
        raise SystemExit(1) from None
    try:
        reference = load_reference(config)
    except ValueError as exc:
        log.error("event=reference_unavailable error=%r", str(exc))
        reference = None
    log.info("event=worker_started worker=%d pid=%d", index, os.getpid())
    while not stop.is_set():
        if os.getppid() != parent_pid:
            break
        try:
            job = store.claim_job(os.getpid())
        except StoreError as exc:
            log.error("event=worker_db_error error=%r", str(exc))
            job = None
        if job is None:
            # Plain sleep: ``stop`` is a lock-free flag (see StopFlag), polled between jobs.
            time.sleep(poll_seconds)
            continue
        log.info("event=job_started job=J%d study=%s run=%d attempt=%d", job.id, job.study_instance_uid, job.run, job.attempts)
        run_job(store, config, job, reference)
    store.close()


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
    """``config.node.workers`` spawned processes, restarted when one dies."""

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store
        self.ctx = multiprocessing.get_context("spawn")
        self.stop_event = StopFlag(self.ctx)
        self.procs: list[Any] = [None] * config.node.workers
        self.spawned_at: list[float] = [0.0] * config.node.workers
        self.timed_out: dict[int, str] = {}

    def _spawn(self, index: int) -> None:
        p = self.ctx.Process(
            target=worker_main,
            args=(self.config, self.stop_event, index, os.getpid()),
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


