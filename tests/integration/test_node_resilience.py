"""Crashes and unreachable destinations: nothing acknowledged is lost, nothing is delivered twice."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.integration.servers import (
    RESULT_TIMEOUT_SECONDS,
    HOST,
    NodeProcess,
    OrthancServer,
    free_port,
    store_statuses,
    wait_until,
)


def _assert_delivered_once(node: NodeProcess, pacs: OrthancServer, study_uid: str) -> None:
    srs = pacs.wait_for_srs(study_uid)
    assert len(srs) == 1, srs
    jobs = node.jobs(study_uid)
    assert [(j["run"], j["state"]) for j in jobs] == [(1, "done")], jobs
    done_lines = node.log_lines(rf"event=job_done.*{study_uid}|{study_uid}.*event=job_done")
    assert len(done_lines) == 1, done_lines


def _send_direct(node: NodeProcess, files: list[Path]) -> None:
    result = node.store(files)
    assert store_statuses(result) == ["Success"] * len(files), result


def test_sigkill_after_acknowledging_instances_then_restart_analyses_and_delivers_once(
        orthanc: OrthancServer, node_factory, write_study) -> None:
    node = node_factory(destinations=[orthanc.as_destination()], quiet_period_seconds=2.0)
    node.start()
    study_uid, files = write_study(2)
    _send_direct(node, files)
    node.kill(signal.SIGKILL)  # inside the quiet period: acknowledged, job not yet queued

    assert len(node.stored_instances(study_uid)) == 2  # "Success" meant "on disk"
    assert all(j["state"] != "done" for j in node.jobs(study_uid))
    node.start()
    _assert_delivered_once(node, orthanc, study_uid)


def test_sigkill_while_the_job_runs_reruns_it_once_and_delivers_once(
        orthanc: OrthancServer, node_factory, write_phantom_study) -> None:
    node = node_factory(destinations=[orthanc.as_destination()], quiet_period_seconds=0.5)
    node.start()

    # Freeze the worker the moment it has claimed the job, so the kill surely lands mid-job.
    # (If the job already finished in between, try again with a new study.)
    for _attempt in range(3):
        study_uid, files = write_phantom_study(1)
        _send_direct(node, files)
        job = wait_until(lambda: next((j for j in node.jobs(study_uid) if j["state"] in ("running", "done")), None),
                         RESULT_TIMEOUT_SECONDS, interval_seconds=0.005, what="the job to start")
        if job["state"] == "running" and job["worker_pid"]:
            try:
                os.kill(job["worker_pid"], signal.SIGSTOP)
            except ProcessLookupError:
                pass
            if node.jobs(study_uid)[0]["state"] == "running":
                break
    else:
        pytest.fail("the job always finished before the worker could be frozen")
    node.kill(signal.SIGKILL)
    assert node.jobs(study_uid)[0]["state"] == "running"
    assert orthanc.sr_instances(study_uid) == []

    node.start()
    _assert_delivered_once(node, orthanc, study_uid)
    assert node.jobs(study_uid)[0]["attempts"] == 2


def test_destination_down_when_results_are_ready_then_up_20_s_later_gets_the_results(
        node_factory, write_study, tmp_path: Path) -> None:
    late_port = free_port()
    node = node_factory(
        destinations=[{"name": "late-pacs", "ae_title": "LATEPACS", "host": HOST, "port": late_port}],
        quiet_period_seconds=0.5,
        export={"retry_base_delay_seconds": 1.0, "retry_max_delay_seconds": 4.0, "max_attempts": 100})
    node.start()
    study_uid, files = write_study(1)
    _send_direct(node, files)

    # Results are ready and the first delivery attempt has failed: the destination is down.
    wait_until(lambda: any(e["attempts"] >= 1 and e["state"] != "sent" for e in node.exports(study_uid)),
               RESULT_TIMEOUT_SECONDS,
               what="a failed export attempt")
    down_since = time.monotonic()
    assert node.log_lines(r"(?i)export.*(fail|retry)"), node.log_tail()
    time.sleep(max(0.0, 20.0 - (time.monotonic() - down_since)))  # the scenario: up 20 s later

    with OrthancServer(tmp_path / "late-pacs", aet="LATEPACS", node_aet=None, dicom_port=late_port) as late:
        srs = late.wait_for_srs(study_uid, timeout_seconds=30)
        assert len(srs) == 1
        assert srs[0].remote_aet == node.ae_title
        wait_until(lambda: all(e["state"] == "sent" for e in node.exports(study_uid)), 10, what="exports sent")
    assert [j["state"] for j in node.jobs(study_uid)] == ["done"]


def test_destination_never_up_fails_visibly_and_queue_retry_delivers_once_it_is_up(
        node_factory, write_study, tmp_path: Path) -> None:
    never_port = free_port()
    node = node_factory(
        destinations=[{"name": "dead-pacs", "ae_title": "DEADPACS", "host": HOST, "port": never_port}],
        quiet_period_seconds=0.5,
        export={"retry_base_delay_seconds": 0.2, "retry_max_delay_seconds": 0.5, "max_attempts": 3})
    node.start()
    study_uid, files = write_study(1)
    _send_direct(node, files)
    exports = wait_until(lambda: (e := node.exports(study_uid)) and all(x["state"] == "failed" for x in e) and e,
                         RESULT_TIMEOUT_SECONDS, what="exports to end failed")
    assert all(e["attempts"] == 3 for e in exports), exports

    listing = node.cli("queue", "list")
    assert listing.ok, listing
    failed_lines = [line for line in listing.output.splitlines() if "failed" in line and "dead-pacs" in line]
    assert len(failed_lines) == len(exports), listing

    with OrthancServer(tmp_path / "revived-pacs", aet="DEADPACS", node_aet=None, dicom_port=never_port) as pacs:
        for export in exports:
            export_id = _listed_id(failed_lines, export["id"])
            retry = node.cli("queue", "retry", export_id)
            assert retry.ok, retry
        srs = pacs.wait_for_srs(study_uid, timeout_seconds=30)
        assert len(srs) == 1
        wait_until(lambda: all(e["state"] == "sent" for e in node.exports(study_uid)), 10, what="exports sent")
    listing = node.cli("queue", "list")
    assert not [line for line in listing.output.splitlines() if "failed" in line and "dead-pacs" in line], listing


def _listed_id(lines: list[str], export_id: int) -> str:
    """The ID token ``queue list`` shows for export row ``export_id`` (e.g. ``E7`` or ``7``)."""
    for line in lines:
        m = re.search(rf"\b(E?{export_id})\b", line)
        if m:
            return m.group(1)
    raise AssertionError(f"export {export_id} not in queue list lines {lines}")


def test_sigterm_to_the_process_group_stops_the_node_cleanly(orthanc: OrthancServer, node_factory,
                                                             write_study) -> None:
    """systemd and terminals signal the whole group: workers and main process must all exit."""
    node = node_factory(destinations=[orthanc.as_destination()], quiet_period_seconds=0.5)
    node.start()
    study_uid, files = write_study(1)
    _send_direct(node, files)
    orthanc.wait_for_srs(study_uid)
    workers = node.child_pids()
    assert workers
    code = node.stop(grace_seconds=15)
    assert not node.stop_needed_sigkill, node.log_tail()
    assert code == 0, node.log_tail()
    assert node.log_lines(r"event=node_stopped")
    # Children exit right after the main process (PDEATHSIG, closed pipes): none may linger.
    wait_until(lambda: not [pid for pid in workers if _alive(pid)], 10, what=f"node children {workers} to exit")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] not in ("Z", "X")
    except OSError:
        return False
