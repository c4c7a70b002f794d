"""What a study waits for between its stages: doorbells instead of polls, a worker warmed at start.

The latency itself is measured by bench/study_latency.py (never timed here); these tests check
the mechanisms: a ring wakes exactly one waiter, across a spawned process too; the assembler
sleeps until the next study falls due; the warm-up builds a made-up study's SR and SC.
"""

from __future__ import annotations

import multiprocessing
import time

from pydicom.uid import generate_uid

from node.pipeline.assembler import DUE_MARGIN_SECONDS, Assembler
from node.pipeline.doorbell import Doorbell
from node.report.options import OutputOptions
from node.report.warmup import warm_up
from node.spool import Store
from tests.dicom_samples import make_image_dataset
from tests.node.node_helpers import encode


def _wait_and_report(bell: Doorbell, timeout_seconds: float, answer) -> None:
    answer.put(bell.wait(timeout_seconds))


def test_a_ring_wakes_one_waiter_and_an_unrung_bell_times_out():
    bell = Doorbell()
    try:
        assert bell.wait(0.05) is False
        bell.ring()
        assert bell.wait(5) is True
        assert bell.wait(0.05) is False, "a ring wakes one wait, not every later one"
        bell.ring()
        bell.ring()
        assert [bell.wait(5), bell.wait(5), bell.wait(0.05)] == [True, True, False]
    finally:
        bell.close()


def test_a_ring_in_one_process_wakes_a_spawned_worker():
    ctx = multiprocessing.get_context("spawn")
    bell, answer = Doorbell(), ctx.Queue()
    child = ctx.Process(target=_wait_and_report, args=(bell, 60.0, answer))
    child.start()
    try:
        bell.ring()
        assert answer.get(timeout=60) is True
    finally:
        child.join(10)
        bell.close()
    assert child.exitcode == 0


def test_ringing_a_bell_nobody_listens_to_never_blocks():
    bell = Doorbell()
    try:
        for _ in range(100_000):  # far past the socket buffer
            bell.ring()
        assert bell.wait(1) is True
    finally:
        bell.close()


def test_the_assembler_sleeps_until_the_next_study_falls_due_and_rings_for_each_job(tmp_path):
    import threading

    store = Store(tmp_path / "data")
    bell = Doorbell()
    assembler = Assembler(store, quiet_period_seconds=10.0, stop=threading.Event(), poll_seconds=1.0, jobs_bell=bell)
    try:
        assert assembler.wait_seconds() == 1.0, "nothing receiving: the poll interval"
        study = generate_uid()
        ds = make_image_dataset(study, rows=16, columns=16)
        received = time.time()
        store.store_instance(encode(ds), sop_instance_uid=ds.SOPInstanceUID, study_instance_uid=study,
                             sop_class_uid=ds.SOPClassUID)
        due = store.next_study_due_at(10.0)
        assert received <= due - 10.0 <= time.time()
        assert abs(assembler.wait_seconds(now=due - 0.3) - (0.3 + DUE_MARGIN_SECONDS)) < 1e-6
        assert assembler.wait_seconds(now=due - 5.0) == 1.0, "never longer than the poll interval"
        assert assembler.wait_seconds(now=due + 3.0) == DUE_MARGIN_SECONDS, "overdue: look again at once"

        assert assembler.tick() == 0  # 10 s quiet period: not due yet, no ring
        assert bell.wait(0.05) is False
        assembler.quiet_period_seconds = 0.0
        assert assembler.tick() == 1
        assert bell.wait(1) is True, "a queued job rings the workers' bell"
        assert store.next_study_due_at(0.0) is None, "no study receiving any more"
    finally:
        bell.close()
        store.close()


def test_warm_up_builds_a_made_up_studys_sr_and_picture():
    assert warm_up(OutputOptions()) == 2
    assert warm_up(OutputOptions(picture=False)) == 1
