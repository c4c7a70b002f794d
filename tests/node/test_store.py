"""Spool + SQLite: durable, idempotent, resumable after a crash (real files, real SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from node.spool import Store, StoreError, atomic_write, uid_filename
from node.spool.files import DIRECT_MIN_BYTES, write_durably
from node.spool.schema import SCHEMA
from tests.dicom_samples import make_image_dataset

from tests.node.node_helpers import encode

REPO = Path(__file__).resolve().parents[2]


def _store_one(store: Store, study: str, sop: str | None = None, data: bytes | None = None) -> tuple[str, str]:
    sop = sop or generate_uid()
    data = data or encode(make_image_dataset(study, rows=16, columns=16, sop_instance_uid=sop))
    return sop, store.store_instance(data, sop_instance_uid=sop, study_instance_uid=study, sop_class_uid="1.2.840.10008.5.1.4.1.1.1")


def test_instance_is_spooled_byte_for_byte_and_recorded(tmp_path):
    store = Store(tmp_path)
    study = generate_uid()
    ds = make_image_dataset(study, rows=16, columns=16)
    data = encode(ds)
    outcome = store.store_instance(data, sop_instance_uid=ds.SOPInstanceUID, study_instance_uid=study,
                                   calling_ae="TESTSCU")
    assert outcome == "stored"
    [rec] = store.study_instances(study)
    assert (store.data_dir / rec.path).read_bytes() == data
    assert rec.size_bytes == len(data) and rec.calling_ae == "TESTSCU"
    assert pydicom.dcmread(store.data_dir / rec.path).SOPInstanceUID == ds.SOPInstanceUID
    assert list(store.tmp_dir.iterdir()) == []  # no temp file left behind


def test_duplicate_sop_instance_is_stored_once(tmp_path):
    store = Store(tmp_path)
    study = generate_uid()
    sop = generate_uid()
    data = encode(make_image_dataset(study, rows=16, columns=16, sop_instance_uid=sop))
    _, first = _store_one(store, study, sop=sop, data=data)
    _, second = _store_one(store, study, sop=sop, data=data)  # the same bytes again (other bytes: issue 12 D8)
    assert (first, second) == ("stored", "duplicate")
    assert len(store.study_instances(study)) == 1


def test_quiet_period_completes_the_study_once_and_a_late_instance_reopens_it(tmp_path):
    store = Store(tmp_path)
    study = generate_uid()
    _store_one(store, study)
    assert store.complete_due_studies(10.0) == []  # still inside the quiet period
    [job] = store.complete_due_studies(10.0, now=time.time() + 11)
    assert (job.study_instance_uid, job.run, job.state) == (study, 1, "queued")
    assert store.complete_due_studies(0.0, now=time.time() + 20) == []  # complete: no second job
    _, outcome = _store_one(store, study)
    assert outcome == "reopened"
    [job2] = store.complete_due_studies(0.0, now=time.time() + 1)
    assert job2.run == 2
    # Run 1 had not started: it is superseded, so the study is analysed once with all instances.
    assert [j.state for j in store.list_jobs()] == ["superseded", "queued"]


def test_running_jobs_and_sending_exports_resume_after_restart(tmp_path):
    store = Store(tmp_path)
    study = generate_uid()
    _store_one(store, study)
    store.complete_due_studies(0.0, now=time.time() + 1)
    job = store.claim_job(worker_pid=12345)
    assert job.state == "running" and job.attempts == 1
    store.finish_job(job.id, [("1.2.3.4", "1.2.840.10008.5.1.4.1.1.88.33", "SR", "outputs/x.dcm")], ["a", "b"])
    assert sorted(store.claim_due_exports()) == ["a", "b"]  # both now 'sending'
    store.close()  # the process "dies" here

    restarted = Store(tmp_path)
    assert restarted.recover() == (0, 2)
    assert {e.state for e in restarted.list_exports()} == {"queued"}


def test_a_job_left_running_by_a_killed_process_runs_again(tmp_path):
    """A real process claims a job and is SIGKILLed; the next start queues the job again."""
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from node.spool import Store
        s = Store({str(tmp_path)!r})
        s.complete_due_studies(0.0, now=time.time() + 1)
        job = s.claim_job(os.getpid())
        print(job.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    store = Store(tmp_path)
    study = generate_uid()
    _store_one(store, study)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    job_id = int(proc.stdout.strip())
    assert store.job(job_id).state == "running"
    jobs_requeued, _ = Store(tmp_path).recover()
    assert jobs_requeued == 1
    again = store.claim_job(os.getpid())
    assert (again.id, again.attempts) == (job_id, 2)


def test_finishing_a_rerun_job_never_duplicates_exports(tmp_path):
    store = Store(tmp_path)
    study = generate_uid()
    _store_one(store, study)
    store.complete_due_studies(0.0, now=time.time() + 1)
    job = store.claim_job(1)
    outputs = [("1.2.3.1", "1.2.840.10008.5.1.4.1.1.88.33", "SR", "o/1.dcm"),
               ("1.2.3.2", "1.2.840.10008.5.1.4.1.1.7", "SC", "o/2.dcm")]
    assert store.finish_job(job.id, outputs, ["pacs"]) == 2
    [e1, _] = store.list_exports()
    store.claim_due_exports()
    store.export_sent(e1.id)
    # The same job finishes again (e.g. it was re-run after a crash): same UIDs, nothing new queued.
    assert store.finish_job(job.id, outputs, ["pacs"]) == 0
    assert [e.state for e in store.list_exports()] == ["sent", "sending"]


def test_export_backoff_then_failed_then_retry(tmp_path):
    store = Store(tmp_path)
    study = generate_uid()
    _store_one(store, study)
    store.complete_due_studies(0.0, now=time.time() + 1)
    job = store.claim_job(1)
    store.finish_job(job.id, [("1.2.3.9", "1.2.840.10008.5.1.4.1.1.88.33", "SR", "o/9.dcm")], ["pacs"])
    delays = lambda n: 10.0 * 2 ** (n - 1)  # noqa: E731

    [e] = store.claim_due_exports()["pacs"]
    before = time.time()
    after = store.export_attempt_failed(e.id, "connection refused", max_attempts=2, delay_seconds=delays)
    assert after.state == "queued" and after.attempts == 1
    assert before + 10.0 <= after.next_attempt_at <= time.time() + 10.0
    assert store.claim_due_exports() == {}  # not due yet
    [e] = store.claim_due_exports(now=after.next_attempt_at)["pacs"]
    after = store.export_attempt_failed(e.id, "connection refused", max_attempts=2, delay_seconds=delays)
    assert (after.state, after.attempts) == ("failed", 2)
    assert store.list_exports()[0].last_error == "connection refused"
    assert store.claim_due_exports(now=time.time() + 1e6) == {}  # failed stays failed

    retried = store.retry_export(e.id)
    assert (retried.state, retried.attempts) == ("queued", 0)
    assert [x.id for x in store.claim_due_exports()["pacs"]] == [e.id]
    assert store.retry_export(9999) is None


def test_previous_sr_uids_are_those_of_the_latest_finished_run(tmp_path):
    store = Store(tmp_path)
    study = generate_uid()
    for run_outputs in (["1.1"], ["2.1", "2.2"]):
        _store_one(store, study)
        store.complete_due_studies(0.0, now=time.time() + 1)
        job = store.claim_job(1)
        store.finish_job(job.id, [(u, "1.2.840.10008.5.1.4.1.1.88.33", "SR", f"o/{u}.dcm") for u in run_outputs]
                         + [(f"{job.run}.9", "1.2.840.10008.5.1.4.1.1.7", "SC", "o/sc.dcm")], [])
    assert store.previous_sr_uids(study, before_run=3) == ["2.1", "2.2"]
    assert store.previous_sr_uids(study, before_run=2) == ["1.1"]
    assert store.previous_sr_uids(study, before_run=1) == []


def test_disk_failure_raises_store_error_and_records_nothing(tmp_path):
    store = Store(tmp_path)
    study = generate_uid()
    store.spool_dir.rmdir()
    store.spool_dir.write_bytes(b"not a directory")  # every spool write now fails
    with pytest.raises(StoreError, match="cannot write spool file"):
        _store_one(store, study)
    assert store.study_instances(study) == []
    assert list(store.tmp_dir.iterdir()) == []


def test_database_failure_inside_a_transaction_raises_store_error_and_rolls_back(tmp_path):
    store = Store(tmp_path)
    study = generate_uid()
    sop, _ = _store_one(store, study)
    store._conn.execute("DROP TABLE jobs")  # a damaged database: statements fail inside transactions
    with pytest.raises(StoreError, match="no such table"):
        store.complete_due_studies(0.0, now=time.time() + 60)  # UPDATE studies, then INSERT INTO jobs fails
    with pytest.raises(StoreError, match="no such table"):
        store.list_jobs()
    # Rolled back and still usable: the study was not marked complete, new instances are stored.
    assert store._query("SELECT state FROM studies")[0]["state"] == "receiving"
    assert _store_one(store, study)[1] == "stored"


def test_atomic_write_replaces_whole_files_only(tmp_path):
    target = tmp_path / "a" / "b.dcm"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["b.dcm"]


def test_uid_filename_keeps_uids_and_hashes_anything_else():
    assert uid_filename("1.2.840.10008.5") == "1.2.840.10008.5"
    weird = uid_filename("../../etc/passwd")
    assert "/" not in weird and weird.startswith("x")


def test_a_rerun_waits_while_the_earlier_run_of_the_same_study_is_running(tmp_path):
    store = Store(tmp_path)
    study, other = generate_uid(), generate_uid()
    _store_one(store, study)
    store.complete_due_studies(0.0, now=time.time() + 1)
    first = store.claim_job(1)
    _store_one(store, study)  # re-opens the study while run 1 runs
    _store_one(store, other)
    store.complete_due_studies(0.0, now=time.time() + 2)
    nxt = store.claim_job(2)
    assert nxt.study_instance_uid == other, "run 2 of a running study must wait"
    assert store.claim_job(3) is None
    store.finish_job(first.id, [], [])
    rerun = store.claim_job(3)
    assert (rerun.study_instance_uid, rerun.run) == (study, 2)


def test_an_old_database_without_user_version_is_upgraded_and_keeps_its_rows(tmp_path):
    import sqlite3

    from node.spool.schema import SCHEMA_VERSION

    old = SCHEMA.replace("    started_at         REAL,\n", "").replace("updated_at         REAL NOT NULL,\n    UNIQUE", "updated_at         REAL NOT NULL,\n    UNIQUE")
    assert "started_at" not in old
    with sqlite3.connect(tmp_path / "node.sqlite3") as c:
        c.executescript(old)
        c.execute("INSERT INTO jobs (study_instance_uid, run, state, created_at, updated_at) VALUES ('1.2', 1, 'queued', 0, 0)")
    store = Store(tmp_path)
    try:
        with sqlite3.connect(tmp_path / "node.sqlite3") as c:
            assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert "started_at" in {r[1] for r in c.execute("PRAGMA table_info(jobs)")}
        job = store.claim_job(123)
        assert job is not None and job.study_instance_uid == "1.2" and job.started_at is not None
    finally:
        store.close()


def test_a_current_database_is_left_alone(tmp_path):
    import sqlite3

    from node.spool.schema import SCHEMA_VERSION

    Store(tmp_path).close()
    with sqlite3.connect(tmp_path / "node.sqlite3") as c:
        before = c.execute("PRAGMA schema_version").fetchone()[0]
    Store(tmp_path).close()
    with sqlite3.connect(tmp_path / "node.sqlite3") as c:
        assert c.execute("PRAGMA schema_version").fetchone()[0] == before
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def _takes_o_direct(folder: Path) -> bool:
    """Whether the filesystem of ``folder`` lets a file be opened with O_DIRECT."""
    try:
        os.close(os.open(folder / ".probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("size", [DIRECT_MIN_BYTES, DIRECT_MIN_BYTES + 1, 10_486_540, 4096, 0])
def test_write_durably_writes_exact_bytes_direct_where_the_filesystem_allows(tmp_path, size):
    """Large files go through O_DIRECT (padded to 4 KiB, then cut back to their length); small
    ones, and any on a filesystem that refuses O_DIRECT, through a plain write. Bytes identical
    either way, from bytes or from a memoryview (the worker's BytesIO buffer)."""
    data = os.urandom(size)
    direct = size >= DIRECT_MIN_BYTES and _takes_o_direct(tmp_path)
    for k, payload in enumerate((data, memoryview(bytearray(data)))):
        path = tmp_path / f"f{k}.bin"
        assert write_durably(path, payload) == ("direct" if direct else "buffered")
        assert path.read_bytes() == data


def test_write_durably_on_tmpfs_as_the_filesystem_allows():
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm (tmpfs) on this machine")
    data = os.urandom(DIRECT_MIN_BYTES + 123)
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        path = Path(tmp) / "x.bin"
        assert write_durably(path, data) == ("direct" if _takes_o_direct(Path(tmp)) else "buffered")
        assert path.read_bytes() == data


def test_write_durably_holds_no_buffer_the_size_of_the_file(tmp_path):
    """A large file goes through 2 MiB staging buffers (DirectWriter), reused afterwards: no
    buffer the size of the file is mapped or kept (a 100 MB image must not stay mapped)."""
    from node.spool import files

    if not _takes_o_direct(tmp_path):
        pytest.skip("this filesystem refuses O_DIRECT: no aligned buffer is used")
    large = os.urandom(4 * files.CHUNK_BYTES + 123)
    assert write_durably(tmp_path / "large.bin", large) == "direct"
    assert (tmp_path / "large.bin").read_bytes() == large
    assert files._pool and all(len(buffer) == files.CHUNK_BYTES for buffer in files._pool)
    kept = list(files._pool)
    write_durably(tmp_path / "again.bin", large)
    assert all(any(b is k for k in kept) for b in files._pool)  # reused, not mapped again
