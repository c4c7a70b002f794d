"""The exporter loop: deliver queued outputs to every destination, with retries and exponential backoff.

One thread in the node process claims due exports from SQLite (state ``sending``), groups them
by destination and delivers each group in one go (one association per destination batch for
DIMSE). A failed attempt is queued again after ``[export] retry_base_delay_seconds * 2**(n-1)``
(at most ``retry_max_delay_seconds``); after ``max_attempts`` the export is ``failed`` until
``dxr-node queue retry E<id>`` re-queues it. Output SOP Instance UIDs are deterministic, so a
re-send after a crash never duplicates at the destination.

Destination types: ``dimse`` (C-STORE SCU), ``folder`` (copy to
``<path>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``), ``dicomweb`` (STOW-RS,
``node.export.stow.send_stow(destination, paths) -> list[node.export.result.SendResult]``),
``hl7`` (one ORU^R01 per SR over MLLP, acknowledged: ``node.export.mllp.send_hl7``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from concurrent.futures import Future, ThreadPoolExecutor

from node.config import Config
from node.export.folder import send_folder
from node.export.result import SendResult
from node.export.scu import send_files
from node.export.stow import send_stow
from node.spool import Export, Store, StoreError

__all__ = ["Exporter", "deliver"]

log = logging.getLogger("dxr.export")


def deliver(config: Config, store: Store, dest_name: str, exports: list[Export]) -> tuple[int, int]:
    """Deliver claimed exports to one destination and record each outcome; (sent, failed attempts).

    DIMSE outcomes are recorded as each C-STORE response arrives (exactly once where the protocol
    allows: after a crash mid-batch only the instances not yet answered go again).
    """
    try:
        dest = config.destination(dest_name)
    except Exception:
        dest = None
    paths = [store.data_dir / e.path for e in exports]
    by_path = dict(zip(paths, exports))
    counts = {True: 0, False: 0}
    recorded: set[int] = set()

    def record(r: SendResult) -> None:
        e = by_path.get(r.path)
        if e is None or e.id in recorded:
            return
        recorded.add(e.id)
        counts[_record(config, store, dest_name, e, r)] += 1

    if dest is None:
        results = [SendResult(p, e.output_sop_instance_uid, False, f"destination {dest_name!r} is no longer configured")
                   for p, e in zip(paths, exports)]
    elif dest.type == "folder":
        results = send_folder(dest, exports, store.data_dir)
    elif dest.type == "hl7":
        from node.export.mllp import send_hl7  # python-hl7 and highdicom: only a node with an HL7 destination

        results = send_hl7(dest, store, exports)
    elif dest.type == "dimse":
        results = send_files(dest, paths, config.export.calling_ae_title or config.node.ae_title, on_result=record,
                             tls=config.tls)
    else:
        results = send_stow(dest, paths)
    for r in results:
        record(r)
    return counts[True], counts[False]


def _record(config: Config, store: Store, dest_name: str, e: Export, r: SendResult) -> bool:
    """Record one export's outcome (sent, or a failed attempt with backoff) and log it; whether it was sent."""
    try:
        if r.ok:
            store.export_sent(e.id)
            log.info(
                "event=export_sent export=E%d destination=%s sop=%s study=%s attempt=%d",
                e.id, dest_name, e.output_sop_instance_uid, e.study_instance_uid, e.attempts + 1,
            )
            return True
        after = store.export_attempt_failed(
            e.id, r.error or "unknown error",
            max_attempts=config.export.max_attempts, delay_seconds=config.export.delay_seconds,
        )
        if after.state == "failed":
            log.error(
                "event=export_failed export=E%d destination=%s sop=%s study=%s attempts=%d error=%r "
                "hint='dxr-node queue retry E%d'",
                e.id, dest_name, e.output_sop_instance_uid, e.study_instance_uid, after.attempts, r.error, e.id,
            )
        else:
            log.warning(
                "event=export_retry export=E%d destination=%s sop=%s attempts=%d retry_in_seconds=%.1f error=%r",
                e.id, dest_name, e.output_sop_instance_uid, after.attempts,
                config.export.delay_seconds(after.attempts), r.error,
            )
    except StoreError as exc:  # state stays 'sending'; recovered at the next start
        log.error("event=export_state_lost export=E%d error=%r", e.id, str(exc))
    return False


class Exporter(threading.Thread):
    """Background thread: deliver due exports, each destination in its own thread.

    A slow or unreachable destination (e.g. a firewall that drops packets: connection timeout)
    only delays its own exports; a destination gets its next batch when its last one is done.
    ``bell`` (a :class:`node.pipeline.doorbell.Doorbell`, rung by the workers when a job has
    queued exports) makes it look at once instead of at its next poll.
    """

    def __init__(self, config: Config, store: Store, stop: threading.Event, poll_seconds: float = 0.5,
                 bell: Any = None):
        super().__init__(name="exporter", daemon=True)
        self.config = config
        self.store = store
        self.stop = stop
        self.poll_seconds = poll_seconds
        self.bell = bell
        self.pool = ThreadPoolExecutor(max_workers=max(len(config.destinations), 1) + 1, thread_name_prefix="export")
        self.in_flight: dict[str, Future] = {}

    def _deliver(self, name: str, exports: list[Export]) -> None:
        try:
            deliver(self.config, self.store, name, exports)
        except Exception as exc:  # never let one destination's surprise stop the exporter
            error = f"{type(exc).__name__}: {exc}"
            log.error("event=exporter_error destination=%s error=%r", name, error)
            for e in exports:
                try:
                    self.store.export_attempt_failed(
                        e.id, error, max_attempts=self.config.export.max_attempts,
                        delay_seconds=self.config.export.delay_seconds,
                    )
                except StoreError:
                    pass

    def tick(self, wait: bool = False) -> int:
        """Start delivering everything due for idle destinations; returns the number of exports claimed.

        ``wait``: return only when those deliveries are done (tests, CLI).
        """
        busy = {name for name, f in self.in_flight.items() if not f.done()}
        try:
            batches = self.store.claim_due_exports(exclude=busy)
        except StoreError as exc:
            log.error("event=exporter_db_error error=%r", str(exc))
            return 0
        for name, exps in batches.items():
            self.in_flight[name] = self.pool.submit(self._deliver, name, exps)
        if wait:
            for name in batches:
                self.in_flight[name].result()
        return sum(len(v) for v in batches.values())

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # a surprise must not end the thread: nothing would be sent again
                log.error("event=exporter_error error=%r", f"{type(exc).__name__}: {exc}")
            if self.bell is not None:
                self.bell.wait(self.poll_seconds)  # the node rings it once more at shutdown
            else:
                self.stop.wait(self.poll_seconds)
        self.pool.shutdown(wait=True)
