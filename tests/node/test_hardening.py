"""Issue 12 hardening: each finding of the adversarial run has a test here that failed before the fix."""

from __future__ import annotations

import logging

import pytest
from pydicom.uid import generate_uid

from node.log import setup_logging
from node.spool import Store, StoreError, atomic_write
from node.spool import files as spool_files
from tests.dicom_samples import make_image_dataset
from tests.node.node_helpers import closed_by_peer, encode


def _data(study: str, sop: str) -> bytes:
    return encode(make_image_dataset(study, rows=16, columns=16, sop_instance_uid=sop))


# ------------------------------------------------------------------ D5, parent fsync
def test_d5_spool_file_is_removed_when_the_commit_fails(tmp_path, monkeypatch):
    store = Store(tmp_path)
    study, sop = generate_uid(), generate_uid()

    def full_disk(*args, **kwargs):
        raise StoreError("database commit failed: database or disk is full")

    monkeypatch.setattr(store, "_record_instance", full_disk)
    with pytest.raises(StoreError):
        store.store_instance(_data(study, sop), sop_instance_uid=sop, study_instance_uid=study)
    assert not store.spool_path(study, sop).exists()  # no orphan


def test_d5_real_sqlite_failure_leaves_no_orphan(tmp_path):
    store = Store(tmp_path)
    study, sop = generate_uid(), generate_uid()
    store._conn.execute("CREATE TRIGGER full BEFORE INSERT ON instances BEGIN SELECT RAISE(ABORT, 'disk is full'); END")
    with pytest.raises(StoreError, match="disk is full"):
        store.store_instance(_data(study, sop), sop_instance_uid=sop, study_instance_uid=study)
    assert not store.spool_path(study, sop).exists()


def test_the_new_study_folder_is_made_durable_in_its_parent(tmp_path, monkeypatch):
    synced = []
    real = spool_files._fsync_dir
    monkeypatch.setattr(spool_files, "_fsync_dir", lambda p: (synced.append(p), real(p)))
    target = tmp_path / "spool" / "1.2.3" / "4.5.dcm"
    atomic_write(target, b"x")
    assert tmp_path / "spool" in synced  # the parent of the new study folder
    assert target.parent in synced


# ------------------------------------------------------------------ D9
def test_d9_log_lines_carry_no_raw_control_bytes_and_warnings_are_log_lines(capsys):
    setup_logging()
    try:
        logging.getLogger("dxr.dimse").warning("event=x calling_ae=%s", "EVIL\x00AE\x1b[2J")
        import warnings
        warnings.warn("Invalid value for VR UI: 'x'\nsecond line", UserWarning)
    finally:
        logging.captureWarnings(False)
    err = capsys.readouterr().err
    assert "\x00" not in err and "\x1b" not in err
    assert "EVIL\\x00AE\\x1b[2J" in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "py.warnings" in lines[1] and "second line" in lines[1]


# ------------------------------------------------------------------ D6
def _queued_exports(cfg, n: int) -> Store:
    """A store with ``n`` outputs of one finished job queued for destination ``pacs`` (no analysis run)."""
    import os
    import time

    store = Store(cfg.data_dir)
    study = generate_uid()
    store.store_instance(_data(study, generate_uid()), sop_instance_uid=generate_uid(), study_instance_uid=study)
    store.complete_due_studies(0.0, now=time.time() + 1)
    job = store.claim_job(os.getpid())
    outputs = []
    for _ in range(n):
        ds = make_image_dataset(study, rows=16, columns=16)
        rel = f"outputs/{ds.SOPInstanceUID}.dcm"
        (cfg.data_dir / rel).write_bytes(encode(ds))
        outputs.append((ds.SOPInstanceUID, ds.SOPClassUID, "SC", rel))
    store.finish_job(job.id, outputs, ["pacs"])
    return store


def test_d6_each_export_is_marked_sent_as_its_c_store_response_arrives(tmp_path):
    """When the PACS gets instance k, the k-1 before it are already 'sent' in SQLite: a crash now re-sends one."""
    from pynetdicom import AE, evt

    from node.dicom import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
    from node.export.exporter import deliver
    from tests.node.node_helpers import HOST, free_port, make_config

    port = free_port()
    cfg = make_config(tmp_path, destinations=f'[[destinations]]\nname = "pacs"\nae_title = "TESTPACS"\n'
                                             f'host = "127.0.0.1"\nport = {port}\n')
    store = _queued_exports(cfg, 4)
    watcher = Store(cfg.data_dir)  # another connection: what a restarted node would find
    sent_when_received: list[int] = []

    def on_store(event):
        sent_when_received.append(sum(e.state == "sent" for e in watcher.list_exports()))
        return 0x0000

    ae = AE(ae_title="TESTPACS")
    for uid in STORAGE_SOP_CLASSES:
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    server = ae.start_server((HOST, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        sent, failed = deliver(cfg, store, "pacs", store.claim_due_exports()["pacs"])
    finally:
        server.shutdown()
    assert (sent, failed) == (4, 0)
    assert sent_when_received == [0, 1, 2, 3]


# ------------------------------------------------------------------ D7
@pytest.mark.parametrize("chunk", [10**9, 1000, 7])
def test_d7_part_header_limit_holds_whatever_the_chunking(chunk):
    from node.receive.multipart import MultipartError, MultipartParser

    body = b"--B\r\nContent-Type: application/dicom\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\nDATA\r\n--B--\r\n"
    parser = MultipartParser(b"B", lambda h: None, lambda d: None, lambda: None)
    with pytest.raises(MultipartError, match="16 KiB"):
        for i in range(0, len(body), chunk):
            parser.feed(body[i:i + chunk])
        parser.close()


# ------------------------------------------------------------------ D2
def _deflate_bomb(study: str, zeros: int) -> bytes:
    """A small Deflated Explicit VR file that inflates to more than ``zeros`` bytes."""
    import io

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = make_image_dataset(study, rows=16, columns=16)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.add_new(0x00091010, "OB", bytes(zeros))  # a private element full of zeros
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _large_declared_image(study: str) -> bytes:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = make_image_dataset(study, rows=16, columns=16)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows = ds.Columns = 8192
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(1000) + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    return encode(ds)


def test_d2_deflate_bomb_and_oversized_declared_image_are_refused_by_ingest(tmp_path, caplog):
    from node.dicom import STATUS
    from node.receive.ingest import ingest
    from tests.node.node_helpers import make_config

    cfg = make_config(tmp_path, "[limits]\nmax_decompressed_bytes = 4000000\n")
    store = Store(cfg.data_dir)
    bomb = _deflate_bomb(generate_uid(), 8_000_000)
    assert len(bomb) < 50_000
    caplog.set_level(logging.WARNING)
    out = ingest(store, cfg, bomb, calling_ae="EVIL")
    assert (out.outcome, out.status) == ("invalid", STATUS["cannot_understand"])
    assert "max_decompressed_bytes" in out.message
    big = ingest(store, cfg, _large_declared_image(generate_uid()), calling_ae="EVIL")
    assert (big.outcome, big.status) == ("invalid", STATUS["cannot_understand"])
    assert "max_pixel_bytes" in big.message
    assert sum("reason=too_large" in r.getMessage() for r in caplog.records) == 2
    assert list(store.spool_dir.rglob("*.dcm")) == []
    small = ingest(store, cfg, _deflate_bomb(generate_uid(), 1000), calling_ae="OK")
    assert small.outcome == "stored"  # a normal Deflated instance still goes in


def test_d2_deflate_bomb_over_c_store_gets_a_failure_status(tmp_path):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from node.receive.scp import start_scp
    from tests.node.node_helpers import make_config, scu

    cfg = make_config(tmp_path, "[limits]\nmax_decompressed_bytes = 4000000\n")
    store = Store(cfg.data_dir)
    server = start_scp(cfg, store)
    try:
        import io

        import pydicom

        ds = pydicom.dcmread(io.BytesIO(_deflate_bomb(generate_uid(), 8_000_000)))
        assoc = scu(cfg.node.port, contexts=[ds.SOPClassUID], syntaxes=[DeflatedExplicitVRLittleEndian])
        assert assoc.is_established
        status = assoc.send_c_store(ds)
        assoc.release()
    finally:
        server.shutdown()
    assert status.Status == 0xC210 and "Deflated" in status.ErrorComment
    assert list(store.spool_dir.rglob("*.dcm")) == []


def test_d2_deflate_bomb_over_stow_is_refused_and_parsed_once(tmp_path, monkeypatch):
    import dataclasses

    from starlette.testclient import TestClient

    import node.receive.stow as stow_mod
    from node.http.app import create_app
    from node.limits import LimitsConfig
    from tests.node.test_dicomweb import Node, failed_items, multipart, small_image

    node = Node(tmp_path)
    node.config = dataclasses.replace(node.config, limits=LimitsConfig(max_decompressed_bytes=4_000_000))
    node.client = TestClient(create_app(node.config, node.store), raise_server_exceptions=False)
    resp = node.post(multipart([_deflate_bomb(generate_uid(), 8_000_000)]))
    assert resp.status_code in (400, 409), resp.text
    assert [int(i.FailureReason) for i in failed_items(resp)] == [0xC210]
    node.assert_nothing_stored()
    # A good part is parsed once (the STOW check and ingest share the data set).
    parses = []
    real = stow_mod.pydicom.dcmread
    monkeypatch.setattr(stow_mod.pydicom, "dcmread", lambda *a, **k: (parses.append(1), real(*a, **k))[1])
    import node.receive.ingest as ingest_mod
    monkeypatch.setattr(ingest_mod.pydicom, "dcmread", lambda *a, **k: (parses.append(1), real(*a, **k))[1])
    assert node.post(multipart([encode(small_image())])).status_code == 200
    assert len(parses) == 1


# ------------------------------------------------------------------ D4
def _start_scp(tmp_path, **node):
    import dataclasses

    from node.receive.scp import start_scp
    from tests.node.node_helpers import make_config

    cfg = make_config(tmp_path)
    cfg = dataclasses.replace(cfg, node=dataclasses.replace(cfg.node, **node))
    return cfg, start_scp(cfg, Store(cfg.data_dir))


def test_d4_silent_connections_are_dropped_in_seconds_and_logged(tmp_path, caplog):
    import socket

    from tests.node.node_helpers import HOST, scu, wait_until

    cfg, server = _start_scp(tmp_path, max_associations=3, acse_timeout_seconds=1.0)
    caplog.set_level(logging.INFO, logger="dxr.dimse")
    silent = [socket.create_connection((HOST, cfg.node.port)) for _ in range(3)]
    try:
        wait_until(lambda: all(closed_by_peer(s) for s in silent), 20, "silent connections closed by the node")

        def associates() -> bool:
            assoc = scu(cfg.node.port)
            accepted = assoc.is_established
            if accepted:
                assoc.release()
            return accepted

        # The slots are free again once the dropped connections' threads have ended (a moment after
        # the socket closes: an association at that instant may still be refused for the limit).
        wait_until(associates, 10, "an association accepted after the silent connections were dropped")
    finally:
        for s in silent:
            s.close()
        server.shutdown()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("event=connection_dropped" in m and "A-ASSOCIATE-RQ" in m for m in messages) == 3


@pytest.mark.parametrize("limits, reason", [
    (dict(max_associations=3, max_associations_per_host=2), "max_associations_per_host = 2"),
    (dict(max_associations=2, max_associations_per_host=5), "association limit reached (max_associations = 2)"),
])
def test_d4_per_host_and_capacity_rejections_are_logged(tmp_path, caplog, limits, reason):
    from tests.node.node_helpers import scu

    cfg, server = _start_scp(tmp_path, **limits)
    caplog.set_level(logging.INFO, logger="dxr.dimse")
    held = [scu(cfg.node.port) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        assert scu(cfg.node.port).is_rejected
    finally:
        for a in held:
            a.release()
        server.shutdown()
    messages = [r.getMessage() for r in caplog.records if "association_rejected" in r.getMessage()]
    assert len(messages) == 1 and reason in messages[0], messages


def test_d4_an_idle_association_is_aborted_after_network_timeout(tmp_path):
    from tests.node.node_helpers import scu, wait_until

    cfg, server = _start_scp(tmp_path, network_timeout_seconds=1.0)
    try:
        assoc = scu(cfg.node.port)
        assert assoc.is_established
        wait_until(lambda: not assoc.is_established, 20, "the idle association aborted by the node")
        assert assoc.is_aborted
    finally:
        server.shutdown()


# ------------------------------------------------------------------ D1
def test_d1_idle_http_connections_are_capped_and_dropped_and_dimse_keeps_answering(tmp_path, caplog):
    import socket
    import time

    import httpx

    from node.config import HttpConfig
    from node.http.server import HttpServer
    from tests.node.node_helpers import HOST, free_port, scu, wait_until
    from tests.node.test_dicomweb import Node

    caplog.set_level(logging.INFO)
    node = Node(tmp_path / "http")
    port = free_port()
    server = HttpServer(node.client.app, HOST, port, HttpConfig(max_connections=5, header_timeout_seconds=1.0)).start()
    cfg, scp = _start_scp(tmp_path / "dimse")
    idle = []
    try:
        idle = [socket.create_connection((HOST, port)) for _ in range(20)]
        trickle = socket.create_connection((HOST, port))
        trickle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assoc = scu(cfg.node.port)  # DIMSE unaffected
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release()
        wait_until(lambda: sum(closed_by_peer(s) for s in idle) >= 15, 20, "connections over the cap closed")
        for _ in range(3):  # a slow client trickling its headers is cut off too
            time.sleep(0.3)
            try:
                trickle.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
        wait_until(lambda: all(closed_by_peer(s) for s in idle + [trickle]), 20, "idle connections dropped")
        assert httpx.get(f"http://{HOST}:{port}/healthz", timeout=10).status_code == 200
    finally:
        for s in idle:
            s.close()
        server.stop()
        scp.shutdown()
    messages = [r.getMessage() for r in caplog.records]
    assert any("event=http_connection_refused" in m and "max_connections = 5" in m for m in messages)
    assert any("event=http_connection_dropped" in m and "header_timeout_seconds" in m for m in messages)


# ------------------------------------------------------------------ D3
@pytest.mark.parametrize("bad", [
    {"SpecificCharacterSet": "NOT_A_CHARSET", "PatientName": "M\u00fcller^Hans"},
    {"StudyDate": "2025-13-45", "AccessionNumber": "A" * 40 + "\x01"},
])
def test_d3_a_header_the_builders_cannot_carry_still_yields_the_sr(tmp_path, bad, caplog):
    import os
    import time
    import warnings

    import pydicom

    from node.pipeline.worker import run_job
    from tests.node.node_helpers import make_config

    cfg = make_config(tmp_path)
    store = Store(cfg.data_dir)
    ds = make_image_dataset(rows=64, columns=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in bad.items():
            setattr(ds, keyword, value)
        data = encode(ds)
    store.store_instance(data, sop_instance_uid=ds.SOPInstanceUID, study_instance_uid=ds.StudyInstanceUID,
                         sop_class_uid=ds.SOPClassUID)
    store.complete_due_studies(0.0, now=time.time() + 1)
    job = store.claim_job(os.getpid())
    caplog.set_level(logging.WARNING)
    assert run_job(store, cfg, job)
    assert store.job(job.id).state == "done"
    srs = [pydicom.dcmread(p) for p in store.outputs_dir.rglob("*.dcm")]
    srs = [s for s in srs if s.Modality == "SR"]
    assert len(srs) == 1 and srs[0].StudyInstanceUID == ds.StudyInstanceUID
    if "PatientName" in bad:
        assert str(srs[0].PatientName) == "M\u00fcller^Hans"
    assert any("event=header_fallback" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ D8
def _versions(study: str, sop: str):
    v1 = make_image_dataset(study, rows=16, columns=16, sop_instance_uid=sop, laterality="L")
    v2 = make_image_dataset(study, rows=16, columns=16, sop_instance_uid=sop, laterality="R")  # corrected
    return encode(v1), encode(v2)


@pytest.mark.parametrize("policy, status, content", [
    ("replace", 0x0000, "v2"), ("keep", 0x0000, "v1"), ("reject", 0x0111, "v1")])
def test_d8_a_changed_duplicate_follows_the_policy(tmp_path, policy, status, content, caplog):
    import time

    from node.config import load_config
    from node.receive.ingest import ingest
    from tests.node.node_helpers import write_config

    text = write_config(tmp_path).read_text().replace("[study]\n", f'[study]\non_changed_duplicate = "{policy}"\n')
    (tmp_path / "node.toml").write_text(text)
    cfg = load_config(tmp_path / "node.toml")
    assert cfg.study.on_changed_duplicate == policy
    store = Store(cfg.data_dir)
    study, sop = generate_uid(), generate_uid()
    v1, v2 = _versions(study, sop)
    assert ingest(store, cfg, v1, calling_ae="A").outcome == "stored"
    store.complete_due_studies(0.0, now=time.time() + 5)
    assert ingest(store, cfg, v1, calling_ae="A").outcome == "duplicate"  # same bytes: stored once, as before
    out = ingest(store, cfg, v2, calling_ae="A")
    assert out.status == status
    [rec] = store.study_instances(study)
    assert (store.data_dir / rec.path).read_bytes() == {"v1": v1, "v2": v2}[content]
    assert len(list(store.spool_dir.rglob("*.dcm"))) == 1
    state = store._query("SELECT state FROM studies WHERE study_instance_uid=?", (study,))[0]["state"]
    assert state == ("receiving" if policy == "replace" else "complete")  # replace: the study runs again
    if policy != "replace":
        assert any("event=instance_changed_duplicate" in r.getMessage() for r in caplog.records)


def test_d8_an_instance_resent_under_another_study_moves_there_and_both_studies_run_again(tmp_path):
    import time

    from node.receive.ingest import ingest
    from tests.node.node_helpers import make_config

    cfg = make_config(tmp_path)
    assert cfg.study.on_changed_duplicate == "replace"  # the default
    store = Store(cfg.data_dir)
    old_study, new_study, sop = generate_uid(), generate_uid(), generate_uid()
    keep = encode(make_image_dataset(old_study, rows=16, columns=16))
    moved = encode(make_image_dataset(old_study, rows=16, columns=16, sop_instance_uid=sop))
    for data in (keep, moved):
        ingest(store, cfg, data, calling_ae="A")
    store.complete_due_studies(0.0, now=time.time() + 5)
    merged = encode(make_image_dataset(new_study, rows=16, columns=16, sop_instance_uid=sop))  # patients merged
    assert ingest(store, cfg, merged, calling_ae="A").outcome == "reopened"
    assert [r.sop_instance_uid for r in store.study_instances(new_study)] == [sop]
    assert len(store.study_instances(old_study)) == 1
    states = {r["study_instance_uid"]: r["state"] for r in store._query("SELECT * FROM studies")}
    assert states == {old_study: "receiving", new_study: "receiving"}
    assert not store.spool_path(old_study, sop).exists()


def test_d8_an_unknown_policy_is_a_config_error(tmp_path):
    from node.config import ConfigError, load_config
    from tests.node.node_helpers import write_config

    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[study]\n", '[study]\non_changed_duplicate = "merge"\n'))
    with pytest.raises(ConfigError, match="on_changed_duplicate"):
        load_config(path)


def test_d8_the_same_data_set_with_another_file_meta_is_a_plain_duplicate(tmp_path):
    store = Store(tmp_path)
    study, sop = generate_uid(), generate_uid()
    ds = make_image_dataset(study, rows=16, columns=16, sop_instance_uid=sop)
    first = encode(ds)
    ds.file_meta.SourceApplicationEntityTitle = "OTHERSENDER"  # e.g. the same instance again over STOW-RS
    second = encode(ds)
    assert first != second
    ids = dict(sop_instance_uid=sop, study_instance_uid=study)
    assert store.store_instance(first, **ids) == "stored"
    assert store.store_instance(second, **ids) == "duplicate"


# ------------------------------------------------------------------ one node per data_dir
def test_a_second_serve_on_the_same_data_dir_exits_at_once_naming_the_pid_and_touches_nothing(tmp_path):
    import signal
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    from tests.node.node_helpers import free_port, scu, wait_until, write_config

    repo = Path(__file__).resolve().parents[2]
    node = [sys.executable, "-m", "node.cli", "serve"]
    port = free_port()
    cfg = write_config(tmp_path, port=port)
    first = subprocess.Popen([*node, "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             cwd=repo, start_new_session=True)
    try:
        wait_until(lambda: (a := scu(port)).is_established and (a.release() or True), 60, "first node answering")
        db = tmp_path / "var" / "node.sqlite3"
        with sqlite3.connect(db) as c:  # an export the live node is sending
            c.execute("INSERT INTO exports (output_sop_instance_uid, destination, state, attempts, next_attempt_at, "
                      "updated_at) VALUES ('1.2.3', 'outbox', 'sending', 0, 0, 0)")
        second = subprocess.run([*node, "--config", str(cfg), "--port", str(free_port())], capture_output=True,
                                text=True, cwd=repo, timeout=60)
        with sqlite3.connect(db) as c:
            state = c.execute("SELECT state FROM exports WHERE output_sop_instance_uid='1.2.3'").fetchone()[0]
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
    assert second.returncode == 1
    errors = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f"(PID {first.pid})" in errors[0] and "in use by another dxr-node" in errors[0], errors
    assert state == "sending"  # the second node never ran recover()


# ------------------------------------------------------------------ retention
def _delivered_study(cfg, store: Store, *, deliver_it: bool = True) -> str:
    import os
    import time

    from node.export.exporter import deliver

    study = generate_uid()
    store.store_instance(_data(study, sop := generate_uid()), sop_instance_uid=sop, study_instance_uid=study)
    store.complete_due_studies(0.0, now=time.time() + 1)
    job = store.claim_job(os.getpid())
    ds = make_image_dataset(study, rows=16, columns=16)
    rel = f"outputs/{study}/{ds.SOPInstanceUID}.dcm"
    (cfg.data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    (cfg.data_dir / rel).write_bytes(encode(ds))
    store.finish_job(job.id, [(ds.SOPInstanceUID, ds.SOPClassUID, "SR", rel)], ["outbox"])
    if deliver_it:
        for name, exports in store.claim_due_exports().items():
            deliver(cfg, store, name, exports)
    return study


def test_retention_purges_only_delivered_studies_after_keep_days_with_their_files(tmp_path, capsys):
    import time

    from node import retention
    from node.cli import main
    from tests.node.node_helpers import make_config

    cfg = make_config(tmp_path, "[retention]\nkeep_days = 30\n")
    store = Store(cfg.data_dir)
    done = _delivered_study(cfg, store)
    pending = _delivered_study(cfg, store, deliver_it=False)
    files = [p for p in cfg.data_dir.rglob("*.dcm")]
    assert len(files) == 5  # 2 spool + 2 outputs + 1 outbox copy
    assert retention.due_studies(cfg, store) == []  # delivered today: kept
    later = time.time() + 31 * 86400
    assert [s.study for s in retention.due_studies(cfg, store, later)] == [done]
    assert main(["purge", "--dry-run", "--config", str(cfg.path)]) == 0
    assert "would purge 0 studies" in capsys.readouterr().out
    assert retention.purge(cfg, store, later) == 1
    left = sorted(p for p in cfg.data_dir.rglob("*.dcm"))
    assert len(left) == 2 and all(pending in str(p) for p in left)  # the undelivered study keeps everything
    assert store.study_instances(done) == [] and len(store.study_instances(pending)) == 1
    assert retention.purge(cfg, store, later + 1000 * 86400) == 0  # never before delivery


def test_retention_purges_early_oldest_first_when_the_disk_is_low(tmp_path, monkeypatch, capsys):
    from node import retention
    from node.cli import main
    from tests.node.node_helpers import make_config

    cfg = make_config(tmp_path, "[retention]\nkeep_days = 30\npurge_below_free_bytes = 1000\n")
    store = Store(cfg.data_dir)
    first = _delivered_study(cfg, store)
    second = _delivered_study(cfg, store)
    free = iter([10, 10, 10, 5000, 5000])  # low until one study is gone
    monkeypatch.setattr(retention, "free_bytes", lambda _path: next(free, 5000))
    assert main(["purge", "--dry-run", "--config", str(cfg.path)]) == 0
    out = capsys.readouterr().out
    assert out.index(first) < out.index(second) and "early purge" in out
    assert retention.purge(cfg, store) == 1
    assert store.study_instances(first) == [] and len(store.study_instances(second)) == 1


# ------------------------------------------------------------------ health endpoints, default bind
@pytest.mark.parametrize("public", [False, True])
def test_readyz_and_metrics_need_the_token_unless_public_health(tmp_path, public):
    import dataclasses

    from starlette.testclient import TestClient

    from node.http.app import create_app
    from tests.node.test_dicomweb import AUTH, Node

    node = Node(tmp_path)
    config = dataclasses.replace(node.config, http=dataclasses.replace(node.config.http, public_health=public))
    client = TestClient(create_app(config, node.store))
    assert client.get("/healthz").status_code == 200  # always open
    for path in ("/readyz", "/metrics"):
        assert client.get(path).status_code == (200 if public else 401)
        assert client.get(path, headers=AUTH).status_code == 200
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == (200 if public else 401)


def test_the_defaults_and_the_shipped_config_listen_on_loopback_and_pin_dcmtk_sources():
    from pathlib import Path

    from node.config import HttpConfig, NodeConfig, load_config

    assert NodeConfig.bind == "127.0.0.1" and HttpConfig.bind == "127.0.0.1"
    shipped = load_config(Path(__file__).resolve().parents[2] / "config" / "node.toml")
    assert shipped.node.bind == "127.0.0.1"
    assert all(s.host in ("127.0.0.1", "localhost") for s in shipped.sources if s.ae_title in ("STORESCU", "ECHOSCU"))


# ------------------------------------------------------------------ monotonic counters
def test_export_counters_never_go_down_after_queue_retry_or_purge(tmp_path):
    import time

    from node import retention
    from node.http.metrics import read_snapshot
    from tests.node.node_helpers import make_config

    cfg = make_config(tmp_path, "[retention]\nkeep_days = 1\n")
    store = Store(cfg.data_dir)
    _delivered_study(cfg, store, deliver_it=False)
    [export] = [e for exps in store.claim_due_exports().values() for e in exps]
    for _ in range(2):
        store.export_attempt_failed(export.id, "PACS down", max_attempts=2, delay_seconds=lambda n: 0.0)
        store.claim_due_exports()
    before = read_snapshot(cfg.db_path)
    assert (before.export_attempts, before.export_failures) == ({"outbox": 2}, {"outbox": 2})
    store.retry_export(export.id)  # attempts back to 0 in the row
    store.claim_due_exports()
    store.export_sent(export.id)
    after = read_snapshot(cfg.db_path)
    assert (after.export_attempts, after.export_failures) == ({"outbox": 3}, {"outbox": 2})
    assert retention.purge(cfg, store, time.time() + 2 * 86400) == 1  # the export row is gone...
    purged = read_snapshot(cfg.db_path)
    assert (purged.export_attempts, purged.export_failures) == ({"outbox": 3}, {"outbox": 2})  # ...not the count


# ------------------------------------------------------------------ JPEG-LS
def test_jpeg_ls_from_dcmtk_is_accepted_spooled_as_is_and_decodes(tmp_path):
    import shutil
    import subprocess

    import pydicom

    if not shutil.which("dcmcjpls"):
        pytest.skip("DCMTK dcmcjpls is not installed (make test installs it)")
    src, jls = tmp_path / "src.dcm", tmp_path / "jls.dcm"
    ds = make_image_dataset(rows=64, columns=64, seed=3)
    ds.save_as(src, enforce_file_format=True)
    subprocess.run(["dcmcjpls", str(src), str(jls)], check=True)
    assert str(pydicom.dcmread(jls).file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.80"
    cfg, server = _start_scp(tmp_path / "node")
    try:
        sent = subprocess.run(["storescu", "-xt", "-aet", "TESTSCU", "-aec", "DXRNODE", "127.0.0.1", str(cfg.node.port),
                               str(jls)], capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert sent.returncode == 0, sent.stderr
    spooled = Store(cfg.data_dir).spool_path(ds.StudyInstanceUID, ds.SOPInstanceUID)
    back = pydicom.dcmread(spooled)
    assert str(back.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.80"  # as received
    assert (back.pixel_array == ds.pixel_array).all()  # the worker's decode (pylibjpeg-libjpeg)


# ------------------------------------------------------------------ TLS
def _make_ca(d):
    """A test CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl CLI)."""
    import subprocess

    d.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=DXR test CA")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=dxr-{name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return d


def _tls_node(tmp_path, require_client: bool = True):
    from node.config import load_config
    from tests.node.node_helpers import write_config

    ca = _make_ca(tmp_path / "pki")
    path = write_config(tmp_path, f'[tls]\ncertificate = "pki/server.crt"\nprivate_key = "pki/server.key"\n'
                                  f'ca_certificates = "pki/ca.crt"\n'
                                  f'require_client_certificate = {str(require_client).lower()}\n')
    return load_config(path), ca


def test_tls_dimse_in_with_dcmtk_echoscu_and_storescu_and_plain_tcp_refused(tmp_path):
    import shutil
    import subprocess

    from node.receive.scp import start_scp

    if not shutil.which("echoscu"):
        pytest.skip("DCMTK is not installed (make test installs it)")
    cfg, ca = _tls_node(tmp_path)
    store = Store(cfg.data_dir)
    server = start_scp(cfg, store)
    src = tmp_path / "hand.dcm"
    ds = make_image_dataset(rows=32, columns=32)
    ds.save_as(src, enforce_file_format=True)
    tls = ["+tls", str(ca / "client.key"), str(ca / "client.crt"), "+cf", str(ca / "ca.crt")]
    where = ["-aet", "TESTSCU", "-aec", "DXRNODE", "127.0.0.1", str(cfg.node.port)]
    try:
        echo = subprocess.run(["echoscu", *tls, *where], capture_output=True, text=True, timeout=60)
        stored = subprocess.run(["storescu", *tls, *where, str(src)], capture_output=True, text=True, timeout=60)
        plain = subprocess.run(["echoscu", *where], capture_output=True, text=True, timeout=60)
        anonymous = subprocess.run(["echoscu", "+tla", "+cf", str(ca / "ca.crt"), *where], capture_output=True,
                                   text=True, timeout=60)
    finally:
        server.shutdown()
    assert echo.returncode == 0, echo.stderr
    assert stored.returncode == 0, stored.stderr
    assert store.spool_path(ds.StudyInstanceUID, ds.SOPInstanceUID).is_file()
    assert plain.returncode != 0  # no TLS: no association
    assert anonymous.returncode != 0  # require_client_certificate: no certificate, no association


def test_tls_dimse_out_to_a_tls_pacs_and_https(tmp_path):
    import dataclasses
    import ssl

    import httpx
    from pynetdicom import AE, evt

    from node.dicom import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
    from node.export.scu import echo, send_files
    from node.http.server import HttpServer
    from node.tls import server_context
    from tests.node.node_helpers import HOST, free_port
    from tests.node.test_dicomweb import Node

    cfg, ca = _tls_node(tmp_path)
    port = free_port()
    received = []
    pacs = AE(ae_title="TLSPACS")
    for uid in STORAGE_SOP_CLASSES:
        pacs.add_supported_context(uid, TRANSFER_SYNTAXES)
    from pynetdicom.sop_class import Verification
    pacs.add_supported_context(Verification)
    server = pacs.start_server((HOST, port), block=False, ssl_context=server_context(cfg.tls),
                               evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append(1) or 0)])
    dest = cfg.destinations[0].__class__(name="pacs", ae_title="TLSPACS", host="127.0.0.1", port=port, tls=True)
    out = tmp_path / "out.dcm"
    make_image_dataset(rows=16, columns=16).save_as(out, enforce_file_format=True)
    try:
        assert echo(dest, "DXRNODE", 10, cfg.tls)[0]
        assert [r.ok for r in send_files(dest, [out], "DXRNODE", tls=cfg.tls)] == [True]
        plain = dataclasses.replace(dest, tls=False)
        assert not echo(plain, "DXRNODE", 5, cfg.tls)[0]  # the TLS PACS refuses plain TCP
    finally:
        server.shutdown()
    assert received == [1]

    web = Node(tmp_path / "web")
    http_port = free_port()
    https = HttpServer(web.client.app, HOST, http_port, web.config.http, cfg.tls).start()
    try:
        ctx = ssl.create_default_context(cafile=str(ca / "ca.crt"))
        ctx.load_cert_chain(ca / "client.crt", ca / "client.key")
        assert httpx.get(f"https://127.0.0.1:{http_port}/healthz", verify=ctx, timeout=10).status_code == 200
        with pytest.raises(httpx.HTTPError):  # no client certificate
            httpx.get(f"https://127.0.0.1:{http_port}/healthz", timeout=10,
                      verify=ssl.create_default_context(cafile=str(ca / "ca.crt")))
    finally:
        https.stop()


# ------------------------------------------------------------------ bounded memory: worker and export batches
def test_the_worker_keeps_no_decoded_image_beside_the_next(tmp_path, monkeypatch):
    import os
    import time

    import node.pipeline.worker as worker
    from tests.node.node_helpers import make_config

    cfg = make_config(tmp_path)
    store = Store(cfg.data_dir)
    study = generate_uid()
    for k in range(3):
        ds = make_image_dataset(study, rows=64, columns=64, seed=k)
        store.store_instance(encode(ds), sop_instance_uid=ds.SOPInstanceUID, study_instance_uid=study)
    store.complete_due_studies(0.0, now=time.time() + 1)
    decoded_at_analysis: list[int] = []
    held: list = []
    real = worker.analysis.analyse

    def analyse(ds, **kwargs):
        decoded_at_analysis.append(sum(d._pixel_array is not None for d in held))
        held.append(ds)
        return real(ds, **kwargs)

    monkeypatch.setattr(worker.analysis, "analyse", analyse)
    assert worker.run_job(store, cfg, store.claim_job(os.getpid()))
    assert decoded_at_analysis == [0, 0, 0]


def test_export_batches_are_bounded_in_count_and_bytes(tmp_path):
    from tests.node.node_helpers import make_config

    cfg = make_config(tmp_path)
    store = _queued_exports(cfg, 5)
    first = store.claim_due_exports(max_count=2)
    assert [len(v) for v in first.values()] == [2]
    size = (cfg.data_dir / first["pacs"][0].path).stat().st_size
    # Room for two files, not three: the files differ by a few bytes (UIDs vary in length).
    second = store.claim_due_exports(max_bytes=size * 2 + 64)
    assert [len(v) for v in second.values()] == [2]
    assert [len(v) for v in store.claim_due_exports().values()] == [1]
    assert store.claim_due_exports() == {}


def test_d9_an_exception_that_ends_a_thread_is_one_log_line(capsys):
    import threading

    setup_logging()
    try:
        def boom():
            raise RuntimeError("reactor\\x00 failed")

        t = threading.Thread(target=boom, name="run_reactor")
        t.start()
        t.join()
    finally:
        threading.excepthook = threading.__excepthook__
        logging.captureWarnings(False)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "event=thread_died thread=run_reactor" in lines[0] and "Traceback" in lines[0]
