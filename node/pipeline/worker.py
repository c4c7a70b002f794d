"""One worker process: claim a job, analyse its study, write the outputs, queue their exports.

A job loads every instance of its study from the spool, calls ``analysis.analyse`` on each
(any exception becomes an ``error`` result with reason ``analysis_error``, logged), builds the
study's outputs with ``node.report.build_study_outputs`` (UID seed
``f"{study_uid}/{run}"``: deterministic, so re-running never duplicates), writes them under
``<data_dir>/outputs/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` and, in one transaction,
records them, queues one export per (output, destination) and marks the job done.

Workers are processes (``spawn``, started by :class:`node.pipeline.pool.WorkerPool`), so
analysis never holds the SCP's GIL. A worker that dies mid-job has its job queued again by the
pool; a node that dies mid-job has it queued again by ``Store.recover`` at the next start.
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import logging
import os
import signal
import time
from typing import Any

import pydicom

import analysis
from analysis.result import REASON_MESSAGES, AnalysisResult
from node.config import Config
from node.dicom import output_kind
from node.installation import installation_uid
from node.log import setup_logging
from node.reference import load_reference
from node.pipeline.headers import make_header_safe
from node.report import build_study_outputs
from node.report.billing import billing_facts
from node.report.options import output_options
from node.spool import Job, Store, StoreError, atomic_write, uid_filename

__all__ = ["run_job", "worker_main"]

log = logging.getLogger("dxr.worker")


def _analyse_one(ds: pydicom.Dataset, reference: Any, job: Job, sop_uid: str) -> AnalysisResult:
    """``analysis.analyse`` on one instance, logged; an exception becomes an ``analysis_error`` result."""
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
    # One decoded image at a time: pydicom caches the decoded array on the data set; the next
    # image must not be decoded beside it (the picture decodes its one source again).
    ds._pixel_array, ds._pixel_id = None, {}
    return result


def _history(store: Store, config: Config, datasets: list) -> list:
    """The patient's earlier results (for the picture's trend): this node's outputs, then the SRs
    any ``[[pacs]]`` holds (node.retrieve.priors); empty when unreadable."""
    from node.report.history import merge_history, patient_history
    from node.retrieve.priors import pacs_history

    if not datasets:
        return []
    try:
        local = patient_history(store, datasets[0])
    except Exception as exc:  # noqa: BLE001 - a trend must never cost the report
        log.warning("event=history_failed error=%r", f"{type(exc).__name__}: {exc}")
        local = []
    try:
        remote = pacs_history(config, datasets[0])
    except Exception as exc:  # noqa: BLE001
        log.warning("event=priors_failed error=%r", f"{type(exc).__name__}: {exc}")
        remote = []
    merged = merge_history(local, remote)
    log.info("event=patient_history study=%s local_points=%d pacs_points=%d points=%d",
             datasets[0].get("StudyInstanceUID", ""), len(local), len(remote), len(merged))
    return merged


def _build_outputs(images: list, job: Job, options: Any, replaces: list[str]) -> list[pydicom.Dataset]:
    """The study's outputs; a source header the builders cannot carry (unknown character set, bad
    date, malformed name) is made safe and the outputs built again, so the study still gets its SR.

    The installation UID in ``options`` makes a second node's or a reinstalled node's UIDs differ;
    the same run re-sent keeps its UIDs."""
    seed = f"{options.installation_uid}/{job.study_instance_uid}/{job.run}"
    try:
        return build_study_outputs(images, uid_seed=seed, run=job.run, options=options, replaces=replaces)
    except Exception as exc:
        repaired = sorted({k for ds, _ in images for k in make_header_safe(ds)})
        if not repaired:
            raise
        log.warning("event=header_fallback job=J%d study=%s repaired=%s error=%r", job.id,
                    job.study_instance_uid, ",".join(repaired), f"{type(exc).__name__}: {exc}")
        return build_study_outputs(images, uid_seed=seed, run=job.run, options=options, replaces=replaces)


def run_job(store: Store, config: Config, job: Job, reference: Any = None) -> bool:
    """Run one claimed job to ``done`` or ``failed``; returns True when done."""
    started, cpu_started = time.monotonic(), time.process_time()
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

        replaces = store.previous_sr_uids(job.study_instance_uid, job.run)
        options = output_options(config, reference=reference)
        installation = installation_uid(store.data_dir, options.uid_root)
        options = dataclasses.replace(options, installation_uid=installation,
                                      history=_history(store, config, [ds for ds, _ in images]))
        outputs = _build_outputs(images, job, options, replaces)
        billing = billing_facts(images, outputs)
        recorded = []
        for ds in outputs:
            uid, sop_class = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
            target = store.outputs_dir / uid_filename(job.study_instance_uid) / f"{uid_filename(uid)}.dcm"
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            atomic_write(target, buf.getbuffer(), tmp_dir=store.tmp_dir)
            recorded.append((uid, sop_class, output_kind(sop_class), str(target.relative_to(store.data_dir))))
        queued = store.finish_job(job.id, recorded, {d.name: d.outputs for d in config.destinations}, billing)
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
        "event=job_done job=J%d study=%s run=%d images=%d outputs=%s exports_queued=%d replaces=%s seconds=%.2f "
        "cpu_seconds=%.2f", job.id, job.study_instance_uid, job.run, len(images), kinds, queued,
        ",".join(replaces) or "-", time.monotonic() - started, time.process_time() - cpu_started,
    )
    log.info("event=billing_recorded job=J%d study=%s run=%d performed=%s modifier=%s reason=%s", job.id,
             job.study_instance_uid, job.run, str(billing.performed).lower(),
             "52" if billing.performed and billing.reduced_service else "-", billing.not_performed_reason or "-")
    return True


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this worker when the node process dies (no orphan keeps analysing)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _warm_up(config: Config, reference: Any, index: int) -> None:
    """Load the numba kernels and build a made-up study's outputs, so the first real study is as
    fast as the next (about 2 s at start instead of in the first study's latency)."""
    from analysis.warmup import warm_up as warm_up_analysis
    from node.report.warmup import warm_up as warm_up_report

    started = time.monotonic()
    try:
        warm_up_analysis()
        built = warm_up_report(output_options(config, reference=reference))
    except Exception as exc:  # noqa: BLE001 - costs only the first study's speed, never a study
        log.warning("event=warm_up_failed worker=%d error=%r", index, f"{type(exc).__name__}: {exc}")
        return
    log.info("event=worker_warmed worker=%d outputs=%d seconds=%.2f", index, built, time.monotonic() - started)


def worker_main(config: Config, stop, index: int, parent_pid: int, poll_seconds: float = 0.2, *,
                jobs_bell: Any = None, exports_bell: Any = None) -> None:
    """Entry point of one worker process: claim jobs until ``stop`` is set.

    ``jobs_bell`` (a :class:`node.pipeline.doorbell.Doorbell`) wakes an idle worker as soon as
    a job is queued (else it looks every ``poll_seconds``); ``exports_bell`` is rung after a
    job's exports are queued, so the exporter sends them at once.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    _die_with_parent(parent_pid)
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
    _warm_up(config, reference, index)
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
            # ``stop`` is a lock-free flag (see StopFlag), polled between jobs.
            if jobs_bell is not None:
                jobs_bell.wait(poll_seconds)
            else:
                time.sleep(poll_seconds)
            continue
        log.info("event=job_started job=J%d study=%s run=%d attempt=%d", job.id, job.study_instance_uid, job.run, job.attempts)
        if run_job(store, config, job, reference) and exports_bell is not None:
            exports_bell.ring()
    store.close()


