"""/metrics (node/metrics.py): receive counters, SQLite-backed counts, disk gauges.

The SQLite side is driven through the real Store state transitions the worker and the exporter
use; the DIMSE side through the real SCP in this process and a pynetdicom SCU.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE

from node.http import metrics
from node.config import load_config
from node.receive.scp import start_scp
from node.disk import DiskWatermark
from node.receive.ingest import IngestOutcome
from node.spool import Store
from tests import dicom_samples
from tests.integration.servers import free_port


def parse(text: bytes | str) -> dict[tuple[str, tuple], float]:
    if isinstance(text, bytes):
        text = text.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(store: Store, destinations=("a", "b"), disk=None) -> dict:
    registry = metrics.build_registry(store.data_dir / "node.sqlite3", destinations, disk)
    return parse(metrics.render(registry))


# ------------------------------------------------------------------------------ histogram buckets
def test_histogram_buckets_match_a_numpy_reference():
    rng = np.random.default_rng(3)
    values = list(rng.exponential(8.0, 500)) + [0.5, 1.0, 300.0, 301.0]  # on and past the bounds
    bounds = metrics.ANALYSIS_DURATION_BUCKETS_SECONDS
    buckets, total = metrics._histogram_buckets(values, bounds)
    expected = [float(np.count_nonzero(np.asarray(values) <= b)) for b in bounds] + [float(len(values))]
    assert [count for _, count in buckets] == expected
    assert [le for le, _ in buckets][-1] == "+Inf"
    assert total == pytest.approx(float(np.sum(values)))


# ------------------------------------------------------------------------------ receive counters
def test_receive_counters_move_per_outcome():
    before = parse(metrics.render(metrics.build_registry("/nonexistent/db")))
    metrics.instance_received("MODALITY1", metrics.PROTOCOL_DIMSE)
    metrics.record_ingest_outcome(IngestOutcome("duplicate", 0, "already stored"), source="MODALITY1",
                                  protocol=metrics.PROTOCOL_DIMSE)
    metrics.record_ingest_outcome(IngestOutcome("no_space", 0xA700, "disk"), source="MODALITY1",
                                  protocol=metrics.PROTOCOL_DIMSE)
    metrics.stow_request(507)
    after = parse(metrics.render(metrics.build_registry("/nonexistent/db")))

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("dxr_instances_received_total", source="MODALITY1", protocol="dimse") == 2
    assert delta("dxr_instances_refused_total", protocol="dimse", reason="no_space") == 1
    assert delta("dxr_stow_requests_total", status="507") == 1
    # A missing database is reported, not raised.
    assert value(after, "dxr_database_up") == 0


# ------------------------------------------------------------------------------ SQLite-backed
def test_counts_follow_the_store_through_jobs_and_exports(tmp_path: Path):
    store = Store(tmp_path / "var")
    s0 = scrape(store)
    assert value(s0, "dxr_database_up") == 1
    assert value(s0, "dxr_instances_stored") == 0
    assert value(s0, "dxr_export_attempts_total", destination="a") == 0  # configured: present at 0

    for study, sops in (("1.2.3.1", ["1.2.3.1.1", "1.2.3.1.2"]), ("1.2.3.2", ["1.2.3.2.1"])):
        for sop in sops:
            assert store.store_instance(b"DICM" * 10, sop_instance_uid=sop, study_instance_uid=study) == "stored"
    jobs = store.complete_due_studies(0.0, now=time.time() + 1)
    assert len(jobs) == 2
    s1 = scrape(store)
    assert value(s1, "dxr_instances_stored") == 3
    assert value(s1, "dxr_studies_completed_total") == 2
    assert value(s1, "dxr_jobs", state="queued") == 2
    assert value(s1, "dxr_queue_depth", queue="jobs") == 2

    job1 = store.claim_job(worker_pid=123)
    time.sleep(0.05)
    store.finish_job(job1.id, [("9.9.1", "1.2.840.10008.5.1.4.1.1.88.33", "SR", "outputs/x/9.9.1.dcm"),
                               ("9.9.2", "1.2.840.10008.5.1.4.1.1.7", "SC", "outputs/x/9.9.2.dcm")], ["a", "b"])
    job2 = store.claim_job(worker_pid=123)
    store.fail_job(job2.id, "boom")
    s2 = scrape(store)
    assert value(s2, "dxr_jobs", state="done") == 1 and value(s2, "dxr_jobs", state="failed") == 1
    assert value(s2, "dxr_queue_depth", queue="jobs") == 0
    assert value(s2, "dxr_analysis_duration_seconds_count") == 2
    assert value(s2, "dxr_analysis_duration_seconds_sum") >= 0.05
    assert value(s2, "dxr_analysis_duration_seconds_bucket", le="+Inf") == 2
    assert value(s2, "dxr_queue_depth", queue="exports") == 4
    assert value(s2, "dxr_exports", destination="a", state="queued") == 2

    # Destination a: one export fails once then goes; the other goes at once.
    # Destination b: both fail until the attempt cap (2) makes them 'failed'.
    delay = lambda attempts: 0.0  # noqa: E731 (no backoff wait in the test)
    by_dest = store.claim_due_exports()
    a1, a2 = by_dest["a"]
    store.export_attempt_failed(a1.id, "refused", max_attempts=2, delay_seconds=delay)
    store.export_sent(a2.id)
    for e in by_dest["b"]:
        store.export_attempt_failed(e.id, "down", max_attempts=2, delay_seconds=delay)
    by_dest = store.claim_due_exports(now=time.time() + 1)
    store.export_sent(by_dest["a"][0].id)
    for e in by_dest["b"]:
        store.export_attempt_failed(e.id, "down", max_attempts=2, delay_seconds=delay)

    s3 = scrape(store)
    assert value(s3, "dxr_export_attempts_total", destination="a") == 3
    assert value(s3, "dxr_export_failures_total", destination="a") == 1
    assert value(s3, "dxr_export_attempts_total", destination="b") == 4
    assert value(s3, "dxr_export_failures_total", destination="b") == 4
    assert value(s3, "dxr_exports", destination="a", state="sent") == 2
    assert value(s3, "dxr_exports", destination="b", state="failed") == 2
    assert value(s3, "dxr_queue_depth", queue="exports") == 0
    snap = metrics.read_snapshot(store.data_dir / "node.sqlite3")
    assert snap.last_export["b"]["state"] == "failed" and snap.last_export["b"]["last_error"] == "down"
    assert snap.last_export["a"]["state"] == "sent"
    assert value(s3, "dxr_jobs_without_report") == 0


def test_a_study_that_showed_no_hand_is_counted(tmp_path: Path):
    """refusal_sr = "hands": a study with no hand gets no SR; the metric counts it."""
    store = Store(tmp_path / "var")
    store.store_instance(b"DICM" * 10, sop_instance_uid="1.2.4.1.1", study_instance_uid="1.2.4.1")
    store.complete_due_studies(0.0, now=time.time() + 1)
    job = store.claim_job(worker_pid=123)
    store.finish_job(job.id, [], ["a"])
    assert value(scrape(store), "dxr_jobs_without_report") == 1


def test_disk_gauges(tmp_path: Path):
    store = Store(tmp_path / "var")
    s = scrape(store, disk=DiskWatermark(store.data_dir, 2**62).check)
    assert value(s, "dxr_accepting_data") == 0
    assert value(s, "dxr_disk_min_free_bytes") == 2**62
    assert value(s, "dxr_disk_free_bytes") > 0
    assert value(scrape(store, disk=DiskWatermark(store.data_dir, 0).check), "dxr_accepting_data") == 1


# ------------------------------------------------------------------------------ the DIMSE hook
def _config(tmp_path: Path, min_free_bytes: int):
    path = tmp_path / "node.toml"
    path.write_text(f"""
[node]
ae_title = "DXRNODE"
bind = "127.0.0.1"
port = {free_port()}
data_dir = "var"
[[sources]]
ae_title = "METRICSCU"
[disk]
min_free_bytes = {min_free_bytes}
""")
    return load_config(path)


@pytest.mark.parametrize("min_free_bytes, status, counter", [
    (0, 0x0000, ("dxr_instances_received_total", {"source": "METRICSCU", "protocol": "dimse"})),
    (2**62, 0xA700, ("dxr_instances_refused_total", {"protocol": "dimse", "reason": "no_space"})),
])
def test_c_store_moves_the_dimse_counters(tmp_path: Path, min_free_bytes, status, counter):
    config = _config(tmp_path, min_free_bytes)
    store = Store(config.data_dir)
    scp = start_scp(config, store)
    try:
        before = scrape(store)
        ds = dicom_samples.make_image_dataset(rows=32, columns=32)
        ae = AE(ae_title="METRICSCU")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", config.node.port, ae_title="DXRNODE")
        assert assoc.is_established
        try:
            rsp = assoc.send_c_store(ds)
        finally:
            assoc.release()
        assert rsp.Status == status
        after = scrape(store)
        name, labels = counter
        assert value(after, name, **labels) - value(before, name, **labels) == 1
        assert value(after, "dxr_instances_stored") == (1 if status == 0 else 0)
    finally:
        scp.shutdown()
        store.close()
