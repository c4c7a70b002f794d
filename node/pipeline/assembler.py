"""Study assembly: a study is complete after ``[study] quiet_period_seconds`` with no new instance.

Completing a study queues one job (``run`` = 1, 2, ...) in SQLite. An instance arriving after
that re-opens the study (``Store.store_instance`` sets it back to ``receiving``); when it is
quiet again the next run is queued, and its outputs replace the earlier run's.
"""

from __future__ import annotations

import logging
import threading

from node.spool import Store, StoreError

__all__ = ["Assembler"]

log = logging.getLogger("dxr.assembler")


class Assembler(threading.Thread):
    """Background thread that turns quiet studies into queued jobs.

    Parameters
    ----------
    store : Store
    quiet_period_seconds : float
    stop : threading.Event
        Set to end the thread.
    poll_seconds : float, optional
        How often to look (seconds); default a quarter of the quiet period, 0.05-1 s.
    """

    def __init__(self, store: Store, quiet_period_seconds: float, stop: threading.Event, poll_seconds: float | None = None):
        super().__init__(name="assembler", daemon=True)
        self.store = store
        self.quiet_period_seconds = quiet_period_seconds
        self.stop = stop
        self.poll_seconds = poll_seconds if poll_seconds is not None else min(max(quiet_period_seconds / 4, 0.05), 1.0)

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
        return len(jobs)

    def run(self) -> None:
        while not self.stop.wait(self.poll_seconds):
            try:
                self.tick()
            except Exception as exc:  # a surprise must not end the thread: no study would complete again
                log.error("event=assembler_error detail=%r", f"{type(exc).__name__}: {exc}")
