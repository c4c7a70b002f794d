"""Jobs and export: real worker processes, real SQLite, a real pynetdicom SCP as the PACS."""

from __future__ import annotations

import os
import signal
import threading
import time

import pydicom
import pytest
from pydicom.uid import generate_uid

from node.pipeline.assembler import Assembler
from node.export.exporter import Exporter, deliver
from node.export.folder import folder_target
from node.spool import Store
from node.pipeline.pool import WorkerPool
from node.pipeline.worker import run_job
from tests.dicom_samples import make_image_dataset

from tests.node.node_helpers import TestPacs, encode, free_port, make_config, wait_until
from tests.node.outputs_inputs import walk_content

SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def _receive_study(store: Store, n: int = 2, study: str | None = None) -> str:
    study = study or generate_uid()
    for k in range(n):
        ds = make_image_dataset(study, rows=64, columns=64, seed=k)
        store.store_instance(encode(ds), sop_instance_uid=ds.SOPInstanceUID, study_instance_uid=study,
                             sop_class_uid=ds.SOPClassUID)
    return study


def _complete_and_claim(store: Store):
    store.complete_due_studies(0.0, now=time.time() + 1)
    return store.claim_job(os.getpid())


def _store_with_one_finished_job(cfg) -> tuple[Store, str]:
    """A store whose one one-image study has been analysed: its exports are queued."""
    store = Store(cfg.data_dir)
    study = _receive_study(store, 1)
    run_job(store, cfg, _complete_and_claim(store))
    return store, study


def _start_exporter(cfg, store: Store) -> tuple[threading.Event, Exporter]:
    stop = threading.Event()
    exporter = Exporter(cfg, store, stop, poll_seconds=0.05)
    exporter.start()
    return stop, exporter


def test_job_writes_outputs_and_queues_one_export_per_destination(tmp_path):
    cfg = make_config(tmp_path, destinations='[[destinations]]\nname = "a"\ntype = "folder"\n'
                                             '[[destinations]]\nname = "b"\ntype = "folder"\npath = "other"\n')
    store = Store(cfg.data_dir)
    study = _receive_study(store)
    job = _complete_and_claim(store)
    assert run_job(store, cfg, job)
    assert store.job(job.id).state == "done"
    outputs = store._query("SELECT * FROM outputs WHERE job_id=?", (job.id,))
    # 64 x 64 px images hold no measurable hand: the study yields exactly one refusal SR (no picture).
    assert [o["kind"] for o in outputs] == ["SR"]
    assert outputs[0]["sop_class_uid"].startswith(SR_PREFIX)
    for o in outputs:
        ds = pydicom.dcmread(store.data_dir / o["path"])
        assert ds.StudyInstanceUID == study
        assert ds.SOPInstanceUID == o["sop_instance_uid"]
    texts = [item.TextValue for item in walk_content(ds) if item.get("ValueType") == "TEXT"]
    assert sum("No DXR measurement" in t for t in texts) == 2, texts  # one per received image
    exports = store.list_exports()
    assert sorted((e.output_sop_instance_uid, e.destination) for e in exports) == sorted(
        (o["sop_instance_uid"], d) for o in outputs for d in ("a", "b"))


def test_rerunning_the_same_job_gives_the_same_output_uids(tmp_path):
    cfg = make_config(tmp_path)
    store = Store(cfg.data_dir)
    _receive_study(store, 1)
    job = _complete_and_claim(store)
    run_job(store, cfg, job)
    first = sorted(r["sop_instance_uid"] for r in store._query("SELECT * FROM outputs"))
    n_exports = len(store.list_exports())
    run_job(store, cfg, job)  # as after a crash between writing outputs and marking done
    assert sorted(r["sop_instance_uid"] for r in store._query("SELECT * FROM outputs")) == first
    assert len(store.list_exports()) == n_exports


def test_reopened_study_gets_a_new_sr_that_replaces_the_first(tmp_path):
    cfg = make_config(tmp_path)
    store = Store(cfg.data_dir)
    study = _receive_study(store, 1)
    job1 = _complete_and_claim(store)
    run_job(store, cfg, job1)
    [sr1] = store.previous_sr_uids(study, before_run=2)
    _receive_study(store, 1, study=study)  # a late instance re-opens the study
    job2 = _complete_and_claim(store)
    assert job2.run == 2
    run_job(store, cfg, job2)
    srs = [r for r in store._query("SELECT * FROM outputs WHERE job_id=? AND kind='SR'", (job2.id,))]
    assert srs and sr1 not in {r["sop_instance_uid"] for r in srs}
    new_sr = pydicom.dcmread(store.data_dir / srs[0]["path"])
    referenced = {
        item.ReferencedSOPInstanceUID
        for study_item in new_sr.PredecessorDocumentsSequence
        for series in study_item.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert sr1 in referenced


def test_unreadable_spool_files_fail_the_job_visibly(tmp_path, caplog):
    cfg = make_config(tmp_path)
    store = Store(cfg.data_dir)
    study = _receive_study(store, 1)
    [rec] = store.study_instances(study)
    (store.data_dir / rec.path).write_bytes(b"")  # the spool file vanished / is empty
    job = _complete_and_claim(store)
    caplog.set_level("INFO", logger="dxr.worker")
    assert not run_job(store, cfg, job)
    failed = store.job(job.id)
    assert failed.state == "failed" and "could be read" in failed.last_error
    assert any("event=job_failed" in r.getMessage() for r in caplog.records)


def test_export_retries_with_backoff_until_a_late_destination_comes_up(tmp_path):
    port = free_port()
    cfg = make_config(
        tmp_path,
        destinations=f'[[destinations]]\nname = "pacs"\nae_title = "TESTPACS"\nhost = "127.0.0.1"\nport = {port}\n',
        extra="",
    )
    cfg = cfg.__class__(**{**cfg.__dict__, "export": cfg.export.__class__(
        retry_base_delay_seconds=0.2, retry_max_delay_seconds=0.4, max_attempts=50)})
    store, _ = _store_with_one_finished_job(cfg)
    stop, exporter = _start_exporter(cfg, store)
    pacs = TestPacs(port)
    try:
        wait_until(lambda: any(e.attempts >= 2 for e in store.list_exports()), 10, "two failed attempts")
        assert all(e.state in ("queued", "sending") for e in store.list_exports())
        pacs.start()
        wait_until(lambda: all(e.state == "sent" for e in store.list_exports()), 10, "exports sent")
    finally:
        stop.set()
        exporter.join(10)
        pacs.stop()
    outputs = {e.output_sop_instance_uid for e in store.list_exports()}
    assert sorted(pacs.received) == sorted(outputs), "each output arrives exactly once"
    assert set(pacs.calling) == {"DXRNODE"}
    assert all(e.attempts >= 3 and e.last_error is None for e in store.list_exports())


def test_export_ends_failed_and_queue_retry_delivers(tmp_path, capsys):
    from node.cli import main

    port = free_port()
    cfg_dir = tmp_path / "cfg"
    cfg = make_config(
        cfg_dir,
        destinations=f'[[destinations]]\nname = "pacs"\nae_title = "TESTPACS"\nhost = "127.0.0.1"\nport = {port}\n',
    )  # max_attempts = 3, delays 0.2 / 0.4 s
    store, _ = _store_with_one_finished_job(cfg)

    def drain():
        for name, exps in store.claim_due_exports().items():
            deliver(cfg, store, name, exps)

    wait_until(lambda: drain() or all(e.state == "failed" for e in store.list_exports()), 10, "exports failed")
    exports = store.list_exports()
    assert all(e.attempts == 3 and "connection failed" in e.last_error for e in exports)

    assert main(["queue", "list", "--config", str(cfg_dir / "node.toml")]) == 0
    listing = capsys.readouterr().out
    for e in exports:
        assert any(line.startswith(f"E{e.id} ") and "failed" in line and "pacs" in line for line in listing.splitlines())
    assert main(["queue", "list", "--state", "failed", "--config", str(cfg_dir / "node.toml")]) == 0
    listing = capsys.readouterr().out
    assert "JOBS (0)" in listing and f"EXPORTS ({len(exports)})" in listing

    pacs = TestPacs(port, ae_title="TESTPACS").start()
    try:
        for e in exports:
            assert main(["queue", "retry", f"E{e.id}", "--config", str(cfg_dir / "node.toml")]) == 0
        drain()
        assert [x.state for x in store.list_exports()] == ["sent"] * len(exports)
        assert pacs.associations == 1, "one association per destination batch"
        # Retrying something already sent is an error, in one line.
        assert main(["queue", "retry", f"E{exports[0].id}", "--config", str(cfg_dir / "node.toml")]) == 1
        assert "already sent" in capsys.readouterr().err
    finally:
        pacs.stop()
    assert sorted(pacs.received) == sorted(e.output_sop_instance_uid for e in exports)


def test_folder_destination_layout(tmp_path):
    cfg = make_config(tmp_path)
    store, study = _store_with_one_finished_job(cfg)
    for name, exps in store.claim_due_exports().items():
        deliver(cfg, store, name, exps)
    dest = cfg.destination("outbox")
    for e in store.list_exports():
        assert e.state == "sent"
        target = folder_target(dest, study, e.output_sop_instance_uid)
        assert target == cfg.data_dir / "outbox" / study / f"{e.output_sop_instance_uid}.dcm"
        assert pydicom.dcmread(target).SOPInstanceUID == e.output_sop_instance_uid


@pytest.mark.slow
def test_worker_processes_run_jobs_and_a_dead_worker_is_replaced(tmp_path):
    cfg = make_config(tmp_path, quiet=0.2)
    store = Store(cfg.data_dir)
    pool = WorkerPool(cfg, store)
    stop = threading.Event()
    assembler = Assembler(store, cfg.study.quiet_period_seconds, stop)
    pool.start()
    assembler.start()
    try:
        study = _receive_study(store, 1)
        wait_until(lambda: [j.state for j in store.list_jobs()] == ["done"], 60, "job done by a worker process")
        [job] = store.list_jobs()
        assert job.worker_pid == pool.procs[0].pid and job.worker_pid != os.getpid()

        # A worker dies while "running" a job: the pool requeues the job and a new worker runs it.
        study2 = _receive_study(store, 1)
        victim = pool.procs[0]
        store.complete_due_studies(0.0, now=time.time() + 1)
        claimed = store.claim_job(victim.pid)  # as if the victim had taken it
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        wait_until(lambda: pool.monitor() or pool.procs[0].pid != victim.pid, 10, "dead worker replaced")
        wait_until(lambda: store.job(claimed.id).state == "done", 60, "requeued job done by the new worker")
        assert store.job(claimed.id).attempts == 2
        assert study2 != study
    finally:
        stop.set()
        assembler.join(5)
        pool.stop()


def test_send_files_uses_one_association_and_keeps_compressed_data_as_it_is(tmp_path):
    from pydicom.uid import RLELossless

    from node.config import DestinationConfig
    from node.export.scu import send_files

    port = free_port()
    plain = make_image_dataset(rows=32, columns=32)
    packed = make_image_dataset(rows=32, columns=32)
    packed.compress(RLELossless)
    paths = []
    for name, ds in (("plain", plain), ("packed", packed)):
        paths.append(tmp_path / f"{name}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    (tmp_path / "broken.dcm").write_bytes(b"nothing")
    paths.append(tmp_path / "broken.dcm")
    pacs = TestPacs(port).start()
    try:
        dest = DestinationConfig(name="p", ae_title="TESTPACS", host="127.0.0.1", port=port)
        results = send_files(dest, paths, "DXRNODE")
    finally:
        pacs.stop()
    assert [r.ok for r in results] == [True, True, False]
    assert "cannot read output file" in results[2].error
    assert pacs.received == [plain.SOPInstanceUID, packed.SOPInstanceUID]
    assert pacs.associations == 1


def test_a_hanging_destination_does_not_hold_up_the_others(tmp_path):
    """A peer that accepts TCP but never answers the association request (like a stuck PACS)."""
    import socket

    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen()
    cfg = make_config(tmp_path, destinations=(
        f'[[destinations]]\nname = "stuck"\nae_title = "STUCK"\nhost = "127.0.0.1"\nport = {hang.getsockname()[1]}\n'
        '[[destinations]]\nname = "outbox"\ntype = "folder"\n'))
    store, _ = _store_with_one_finished_job(cfg)
    stop, exporter = _start_exporter(cfg, store)
    try:
        wait_until(lambda: {e.state for e in store.list_exports() if e.destination == "outbox"} == {"sent"}, 5,
                   "folder exports sent while the stuck peer holds its batch")
        assert {e.state for e in store.list_exports() if e.destination == "stuck"} == {"sending"}
    finally:
        stop.set()
        hang.close()
        exporter.join(60)


@pytest.mark.slow
def test_a_job_over_its_timeout_is_stopped_retried_then_failed(tmp_path):
    # 0.05 s is far below one job's real duration (a fresh worker imports the analysis and
    # highdicom inside its first job), so every attempt overruns.
    cfg = make_config(tmp_path, quiet=0.1)
    cfg = cfg.__class__(**{**cfg.__dict__, "node": cfg.node.__class__(
        **{**cfg.node.__dict__, "job_timeout_seconds": 0.05})})
    store = Store(cfg.data_dir)
    pool = WorkerPool(cfg, store)
    pool.start()
    try:
        _receive_study(store, 1)
        store.complete_due_studies(0.0, now=time.time() + 1)
        [job] = store.list_jobs()
        wait_until(lambda: pool.monitor() or store.job(job.id).state == "failed", 120, "job failed after timeouts",
                   interval=0.02)
        failed = store.job(job.id)
        assert failed.attempts == 3
        assert "was stopped after the 0.05 s job timeout" in failed.last_error
        assert all(p.is_alive() for p in pool.procs), "the pool keeps its workers"
    finally:
        pool.stop()


def test_wiping_data_dir_never_reuses_an_output_uid_for_other_content(tmp_path):
    """Re-run a study, wipe data_dir (a reinstall), run it again: no SOP Instance UID comes back."""
    import shutil

    from node.installation import INSTALLATION_FILE

    cfg = make_config(tmp_path, destinations='[[destinations]]\nname = "a"\ntype = "folder"\n')
    study = generate_uid()
    first_image = make_image_dataset(study, rows=64, columns=64, seed=0)
    late_image = make_image_dataset(study, rows=64, columns=64, seed=1)
    uids: list[str] = []

    def receive_and_run(store: Store, ds) -> None:
        store.store_instance(encode(ds), sop_instance_uid=ds.SOPInstanceUID, study_instance_uid=study,
                             sop_class_uid=ds.SOPClassUID)
        job = _complete_and_claim(store)
        assert job is not None and run_job(store, cfg, job)
        uids.extend(r["sop_instance_uid"] for r in store._query("SELECT * FROM outputs WHERE job_id=?", (job.id,)))

    store = Store(cfg.data_dir)
    receive_and_run(store, first_image)  # run 1
    receive_and_run(store, late_image)   # a late instance: run 2 of the same study
    store.close()
    installation = (cfg.data_dir / INSTALLATION_FILE).read_text().strip()
    shutil.rmtree(cfg.data_dir)          # reinstall: a fresh data_dir and database
    store = Store(cfg.data_dir)
    receive_and_run(store, first_image)  # run 1 again, as far as the new database knows
    store.close()
    assert (cfg.data_dir / INSTALLATION_FILE).read_text().strip() != installation
    assert len(uids) == 3 and len(set(uids)) == 3, uids
    assert all(len(u) <= 64 for u in uids)


def test_uid_root_prefixes_output_uids(tmp_path):
    cfg = make_config(tmp_path, destinations='[[destinations]]\nname = "a"\ntype = "folder"\n',
                      extra='[outputs]\nuid_root = "1.2.826.0.1.3680043.10.999"\n')
    store = Store(cfg.data_dir)
    _receive_study(store, 1)
    job = _complete_and_claim(store)
    assert run_job(store, cfg, job)
    (row,) = store._query("SELECT * FROM outputs WHERE job_id=?", (job.id,))
    ds = pydicom.dcmread(store.data_dir / row["path"])
    assert ds.SOPInstanceUID.startswith("1.2.826.0.1.3680043.10.999.")
    assert ds.SeriesInstanceUID.startswith("1.2.826.0.1.3680043.10.999.")
    assert len(ds.SOPInstanceUID) <= 64


def test_a_patient_analysed_twice_gets_a_trend_on_the_second_picture(tmp_path, monkeypatch):
    from pathlib import Path

    from node.report import picture
    from node.report.history import LSC_PERCENT, patient_history
    from tests.node.outputs_inputs import hand_dataset

    ref = (Path(__file__).resolve().parents[2] / "config" / "reference").resolve()
    cfg = make_config(tmp_path, destinations='[[destinations]]\nname = "a"\ntype = "folder"\n',
                      extra=f'[reference]\ndir = "{ref}"\ntable = "black2001"\n')
    captured = []
    real = picture.compose_picture
    monkeypatch.setattr(picture, "compose_picture", lambda *a, **k: captured.append(k) or real(*a, **k))
    store = Store(cfg.data_dir)
    for seed, date, age in ((0, "20240110", "061Y"), (2, "20260115", "063Y")):
        ds, _ = hand_dataset(laterality="L", seed=seed, study_uid=generate_uid())
        ds.PatientID, ds.StudyDate, ds.PatientSex, ds.PatientAge = "TREND-1", date, "F", age
        store.store_instance(encode(ds), sop_instance_uid=ds.SOPInstanceUID, study_instance_uid=ds.StudyInstanceUID,
                             sop_class_uid=ds.SOPClassUID)
        job = _complete_and_claim(store)
        assert run_job(store, cfg, job)
    assert len(captured) == 2
    assert captured[0]["trend"] is None and not captured[0]["earlier"]
    trend = captured[1]["trend"]
    assert trend is not None and trend.previous_date == "20240110" and trend.lsc_percent == LSC_PERCENT == 1.88
    (earlier_age, earlier_bmd), = captured[1]["earlier"]
    assert earlier_age == pytest.approx(61.0, abs=0.1)
    assert trend.change_g_cm2 == pytest.approx(trend.change_percent / 100 * earlier_bmd)
    assert trend.significant == (abs(trend.change_percent) > 1.88)
    assert "least significant change 1.88 %" in picture.trend_text(trend)
    # Another patient sees none of it.
    other, _ = hand_dataset(laterality="L", study_uid=generate_uid())
    other.PatientID = "SOMEONE-ELSE"
    assert patient_history(store, other) == []
