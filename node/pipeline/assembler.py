"""Study assembly: a study is complete after ``[study] quiet_period_seconds`` with no new instance.

Completing a study queues one job (``run`` = 1, 2, ...) in SQLite. An instance arriving after
that re-opens the study (``Store.store_instance`` sets it back to ``receiving``); when it is
quiet again the next run is queued, and its outputs replace the earlier run's.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from node.spool import Store, StoreError

__all__ = ["Assembler"]

log = logging.getLogger("dxr.assembler")

DUE_MARGIN_SECONDS = 0.005
"""Wake this long after a study falls due (clock granularity), and never sooner between looks."""


class Assembler(threading.Thread):
    """Background thread that turns quiet studies into queued jobs.

    Parameters
    ----------
    store : Store
    quiet_period_seconds : float
    stop : threading.Event
        Set to end the thread.
    poll_seconds : float, optional
        Longest wait between two looks (seconds); default a quarter of the quiet period,
        0.05-1 s. The thread wakes when the next receiving study falls due, not a poll later.
    jobs_bell : node.pipeline.doorbell.Doorbell, optional
        Rung once per queued job (wakes an idle worker).
    """

    def __init__(self, store: Store, quiet_period_seconds: float, stop: threading.Event, poll_seconds: float | None = None,
                 jobs_bell: Any = None):
        super().__init__(name="assembler", daemon=True)
        self.store = store
        self.quiet_period_seconds = quiet_period_seconds
        self.stop = stop
        self.poll_seconds = poll_seconds if poll_seconds is not None else min(max(quiet_period_seconds / 4, 0.05), 1.0)
        self.jobs_bell = jobs_bell

    def tick(self) -> int:
        """Complete every due study now; returns the number of jobs queued."""
        try:
            jobs = self.store.complete_due_studies(self.quiet_period_seconds)
        except StoreError as exc:
            log.error("event=assembler_error detail=%r", str(exc))
            return 0
        for job in jobs:
            try:  # only for the log line: the job is queued already
                n: int | str = len(self.store.study_instances(job.study_instance_uid))
            except StoreError:
                n = "unknown"
            log.info(
                "event=study_complete study=%s instances=%s run=%d job=J%d", job.study_instance_uid, n, job.run, job.id
            )
            if self.jobs_bell is not None:
                self.jobs_bell.ring()
        return len(jobs)

    def wait_seconds(self, now: float | None = None) -> float:
        """Seconds until the next look: when the earliest receiving study falls due (a few ms
        after, so it is due), at most ``poll_seconds`` (a study received meanwhile is due no
        sooner than a quiet period later)."""
        try:
            due = self.store.next_study_due_at(self.quiet_period_seconds)
        except StoreError:
            return self.poll_seconds
        if due is None:
            return self.poll_seconds
        now = time.time() if now is None else now
        return min(self.poll_seconds, max(due - now + DUE_MARGIN_SECONDS, DUE_MARGIN_SECONDS))

    def run(self) -> None:
        while not self.stop.wait(self.wait_seconds()):
            try:
                self.tick()
            except Exception as exc:  # a surprise must not end the thread: no study would complete again
                log.error("event=assembler_error detail=%r", f"{type(exc).__name__}: {exc}")
