"""Prometheus metrics: receive counters in process, queue and export figures read from SQLite at scrape time.

Served as text by ``GET /metrics`` (:mod:`node.http.app`).

Two sources, because analysis runs in separate worker processes:

* **In-process counters** for the receive path, which runs in the ``serve`` process (DIMSE
  handler threads and the HTTP server): call :func:`instance_received` and
  :func:`instance_refused` from the receivers.
* **SQLite at scrape time** for everything the workers and the exporter record there (studies
  completed, jobs by state, analysis durations, export attempts and failures, queue depth).
  SQLite is the node's single source of truth, so these survive restarts and need no
  cross-process shared memory (prometheus-client's multiprocess mode is not used).

Metric names (all prefixed ``dxr_``):

=========================================  =========  ===============================================
name                                       type       labels
=========================================  =========  ===============================================
dxr_instances_received_total               counter    source (calling AE or HTTP client), protocol
dxr_instances_refused_total                counter    protocol, reason
dxr_stow_requests_total                    counter    status (HTTP status code)
dxr_instances_stored                       gauge      (instances in the spool database)
dxr_studies_completed_total                counter    (quiet period reached; re-opened studies count again)
dxr_jobs                                   gauge      state (queued, running, done, failed, superseded)
dxr_jobs_without_report                    gauge      (done jobs that wrote nothing: no image showed a hand)
dxr_analysis_duration_seconds              histogram  (jobs that ran to an end: claim to done/failed)
dxr_export_attempts_total                  counter    destination
dxr_export_failures_total                  counter    destination
dxr_exports                                gauge      destination, state
dxr_queue_depth                            gauge      queue (jobs, exports)
dxr_disk_free_bytes                        gauge
dxr_disk_min_free_bytes                    gauge
dxr_accepting_data                         gauge      (1 while free space is above the watermark)
dxr_database_up                            gauge      (1 when the scrape could read the node database)
=========================================  =========  ===============================================
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

log = logging.getLogger("dxr.node.metrics")

# The *_created series double the output and say nothing useful for a long-running node.
disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""Content type of the Prometheus text exposition format."""

ANALYSIS_DURATION_BUCKETS_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
"""Histogram buckets for one job (a hand study of 1-4 images takes seconds)."""

# ------------------------------------------------------------------------------------------
# In-process counters (receive path). Created unregistered so that each registry built by
# build_registry() can include them; module-level so every receiver shares them.
# ------------------------------------------------------------------------------------------
INSTANCES_RECEIVED = Counter(
    "dxr_instances_received",
    "Instances accepted by a receiver (stored, duplicate, or acknowledged and dropped by the rules).",
    ["source", "protocol"],
    registry=None,
)
INSTANCES_REFUSED = Counter(
    "dxr_instances_refused",
    "Instances refused by a receiver (invalid data, disk watermark, storage failure).",
    ["protocol", "reason"],
    registry=None,
)
STOW_REQUESTS = Counter(
    "dxr_stow_requests",
    "STOW-RS requests answered, by HTTP status code.",
    ["status"],
    registry=None,
)

PROTOCOL_DIMSE = "dimse"
PROTOCOL_STOW = "stow-rs"


def instance_received(source: str, protocol: str) -> None:
    """Count one accepted instance (``protocol``: ``"dimse"`` or ``"stow-rs"``)."""
    INSTANCES_RECEIVED.labels(source=source or "unknown", protocol=protocol).inc()


def instance_refused(protocol: str, reason: str) -> None:
    """Count one refused instance; ``reason`` is a short code (``no_space``, ``invalid``...)."""
    INSTANCES_REFUSED.labels(protocol=protocol, reason=reason or "unknown").inc()


def record_ingest_outcome(outcome, *, source: str, protocol: str) -> None:
    """Count a :class:`node.receive.ingest.IngestOutcome` as received or refused."""
    if outcome.accepted:
        instance_received(source, protocol)
    else:
        instance_refused(protocol, outcome.outcome)


def stow_request(status: int) -> None:
    """Count one answered STOW-RS request."""
    STOW_REQUESTS.labels(status=str(status)).inc()


# ------------------------------------------------------------------------------------------
# SQLite snapshot (scrape time)
# ------------------------------------------------------------------------------------------
@dataclass
class StoreSnapshot:
    """Counts read from the node database in one read-only connection."""

    instances: int = 0
    studies_completed: int = 0
    jobs_by_state: dict[str, int] = field(default_factory=dict)
    jobs_without_report: int = 0
    """Done jobs with no output (``[outputs] refusal_sr`` "hands" and no hand, or "none")."""
    analysis_durations_seconds: list[float] = field(default_factory=list)
    export_attempts: dict[str, int] = field(default_factory=dict)
    export_failures: dict[str, int] = field(default_factory=dict)
    exports_by_destination_state: dict[tuple[str, str], int] = field(default_factory=dict)
    last_export: dict[str, dict] = field(default_factory=dict)
    """Per destination: state, attempts, last_error and updated_at of the latest-updated export."""

    @property
    def queue_depth(self) -> dict[str, int]:
        """Work waiting: jobs queued or running, exports queued or sending."""
        jobs = self.jobs_by_state.get("queued", 0) + self.jobs_by_state.get("running", 0)
        exports = sum(
            n for (_, state), n in self.exports_by_destination_state.items() if state in ("queued", "sending")
        )
        return {"jobs": jobs, "exports": exports}


def connect_read_only(db_path: str | Path, timeout_seconds: float = 5.0) -> sqlite3.Connection:
    """A read-only connection to the node database (raises if it does not exist)."""
    uri = f"file:{Path(db_path).absolute()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=timeout_seconds, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


def read_snapshot(db_path: str | Path) -> StoreSnapshot:
    """Read the counts behind the SQLite-backed metrics.

    Raises
    ------
    sqlite3.Error
        When the database cannot be opened or queried (``/readyz`` reports it).
    """
    snap = StoreSnapshot()
    with closing(connect_read_only(db_path)) as conn:
        snap.instances = conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        snap.studies_completed = conn.execute("SELECT COALESCE(SUM(runs), 0) FROM studies").fetchone()[0]
        snap.jobs_by_state = {
            r["state"]: r["n"] for r in conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        }
        snap.jobs_without_report = conn.execute(
            "SELECT COUNT(*) FROM jobs j WHERE j.state='done' AND NOT EXISTS (SELECT 1 FROM outputs o WHERE o.job_id=j.id)"
        ).fetchone()[0]
        # updated_at is the time the job reached done/failed; started_at when a worker took it.
        snap.analysis_durations_seconds = [
            max(0.0, r[0])
            for r in conn.execute(
                "SELECT updated_at - started_at FROM jobs WHERE state IN ('done', 'failed') AND started_at IS NOT NULL"
            )
        ]
        for r in conn.execute(
            "SELECT destination, state, COUNT(*) AS n, COALESCE(SUM(attempts), 0) AS attempts "
            "FROM exports GROUP BY destination, state"
        ):
            dest, state = r["destination"], r["state"]
            snap.exports_by_destination_state[(dest, state)] = r["n"]
        # Counted as they happen (node.spool.queue_rows), never recomputed from rows that a retry
        # resets or retention deletes: the counters only go up.
        for r in conn.execute("SELECT name, label, value FROM counters"):
            target = {"export_attempts": snap.export_attempts, "export_failures": snap.export_failures}.get(r["name"])
            if target is not None:
                target[r["label"]] = r["value"]
        for r in conn.execute(
            "SELECT destination, state, attempts, last_error, updated_at FROM exports e "
            "WHERE updated_at = (SELECT MAX(updated_at) FROM exports WHERE destination = e.destination) "
            "ORDER BY id"
        ):
            snap.last_export[r["destination"]] = {
                "state": r["state"],
                "attempts": r["attempts"],
                "last_error": r["last_error"],
                "updated_at": r["updated_at"],
            }
    return snap


def _histogram_buckets(values: Iterable[float], bounds: Iterable[float]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative ``(le, count)`` buckets (with ``+Inf``) and the sum of ``values``."""
    values = sorted(values)
    buckets = []
    i = 0
    for bound in bounds:
        while i < len(values) and values[i] <= bound:
            i += 1
        buckets.append((repr(float(bound)), float(i)))
    buckets.append(("+Inf", float(len(values))))
    return buckets, float(sum(values))


class StoreCollector(Collector):
    """Collects the SQLite-backed metrics and the disk gauges at scrape time.

    Parameters
    ----------
    db_path
        The node database (``<data_dir>/node.sqlite3``).
    destinations
        Configured destination names, so every destination has series even before its first export.
    disk_check
        Returns a :class:`node.disk.DiskState` (``DiskWatermark.check``), or None to skip disk gauges.
    """

    def __init__(
        self,
        db_path: str | Path,
        destinations: Iterable[str] = (),
        disk_check: Callable[[], object] | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self.destinations = list(destinations)
        self.disk_check = disk_check

    def describe(self) -> list[Metric]:
        # Collected only at scrape time; describing nothing keeps registration free of queries.
        return []

    def collect(self) -> Iterable[Metric]:
        if self.disk_check is not None:
            state = self.disk_check()
            yield GaugeMetricFamily("dxr_disk_free_bytes", "Free bytes on the data_dir filesystem.", value=state.free_bytes)
            yield GaugeMetricFamily(
                "dxr_disk_min_free_bytes", "Configured free-space watermark ([disk] min_free_bytes).",
                value=state.min_free_bytes,
            )
            yield GaugeMetricFamily(
                "dxr_accepting_data", "1 while free space is above the watermark and new data is accepted.",
                value=1.0 if state.ok else 0.0,
            )
        up = GaugeMetricFamily("dxr_database_up", "1 when the node database could be read for this scrape.")
        try:
            snap = read_snapshot(self.db_path)
        except sqlite3.Error as exc:
            log.warning("event=metrics_db_unreadable path=%s error=%r", self.db_path, str(exc))
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up

        yield GaugeMetricFamily("dxr_instances_stored", "Instances recorded in the spool database.", value=snap.instances)
        yield CounterMetricFamily(
            "dxr_studies_completed", "Studies called complete after the quiet period (re-opened studies count again).",
            value=snap.studies_completed,
        )
        jobs = GaugeMetricFamily("dxr_jobs", "Jobs by state.", labels=["state"])
        for state in sorted(set(snap.jobs_by_state) | {"queued", "running", "done", "failed"}):
            jobs.add_metric([state], snap.jobs_by_state.get(state, 0))
        yield jobs
        yield GaugeMetricFamily(
            "dxr_jobs_without_report", "Finished jobs that sent nothing (no image showed a hand, or refusal_sr none).",
            value=snap.jobs_without_report,
        )

        buckets, total = _histogram_buckets(snap.analysis_durations_seconds, ANALYSIS_DURATION_BUCKETS_SECONDS)
        hist = HistogramMetricFamily(
            "dxr_analysis_duration_seconds", "Time from a worker taking a job to the job ending (seconds)."
        )
        hist.add_metric([], buckets, total)
        yield hist

        dests = sorted(set(self.destinations) | set(snap.export_attempts))
        attempts = CounterMetricFamily("dxr_export_attempts", "Export attempts by destination.", labels=["destination"])
        failures = CounterMetricFamily("dxr_export_failures", "Failed export attempts by destination.", labels=["destination"])
        for d in dests:
            attempts.add_metric([d], snap.export_attempts.get(d, 0))
            failures.add_metric([d], snap.export_failures.get(d, 0))
        yield attempts
        yield failures
        exports = GaugeMetricFamily("dxr_exports", "Exports by destination and state.", labels=["destination", "state"])
        for (d, state), n in sorted(snap.exports_by_destination_state.items()):
            exports.add_metric([d, state], n)
        yield exports

        depth = GaugeMetricFamily("dxr_queue_depth", "Work waiting: jobs queued or running, exports queued or sending.",
                                  labels=["queue"])
        for queue, n in snap.queue_depth.items():
            depth.add_metric([queue], n)
        yield depth


def build_registry(
    db_path: str | Path,
    destinations: Iterable[str] = (),
    disk_check: Callable[[], object] | None = None,
) -> CollectorRegistry:
    """A registry with the in-process receive counters and the SQLite/disk collector."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in (INSTANCES_RECEIVED, INSTANCES_REFUSED, STOW_REQUESTS):
        registry.register(collector)
    registry.register(StoreCollector(db_path, destinations, disk_check))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(registry)
