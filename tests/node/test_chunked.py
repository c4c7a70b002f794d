"""Chunked C-STORE receive (node.receive.chunked): data sets written to tmp/ as they arrive, moved
into the spool; real pynetdicom and DCMTK storescu senders against the SCP started here."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import _config
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta

from node.receive import chunked
from node.receive.scp import start_scp
from node.spool import Store
from node.spool.files import CHUNK_BYTES
from tests.dicom_samples import CR_IMAGE_STORAGE, make_image_dataset
from node.config import load_config
from tests.node.node_helpers import HOST, SCU_AET, make_config, running_scp, scu, wait_until, write_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """One SCP: chest images ignored, a 4 MiB Deflated limit, changed duplicates replaced (default)."""
    with running_scp(tmp_path_factory.mktemp("chunked"), '[[rules.ignore]]\nname = "chest"\n'
                     'BodyPartExamined = ["CHEST"]\n[limits]\nmax_decompressed_bytes = 4194304\n') as (cfg, store):
        assert _config.STORE_RECV_CHUNKED_DATASET  # the patch is on for the verified pynetdicom
        yield cfg, store


def _body(ds: pydicom.Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """The data set as a sender puts it on the wire in ``syntax`` (no File Meta)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _expected_file(ds: pydicom.Dataset, body: bytes, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """What pynetdicom's in-memory receive gave (``event.encoded_dataset()``): the node spooled that before."""
    meta = DicomBytesIO()
    write_file_meta_info(meta, create_file_meta(sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID,
                                                transfer_syntax=syntax))
    return b"\x00" * 128 + b"DICM" + meta.getvalue() + body


def _send_request(port: int, body: bytes, *, sop_class: str | None, sop_instance: str | None,
                  syntax: str = ExplicitVRLittleEndian):
    """A hand-built C-STORE-RQ carrying ``body`` as its data set; returns (response status or None, association)."""
    assoc = scu(port, contexts=[CR_IMAGE_STORAGE], syntaxes=[syntax])
    assert assoc.is_established
    cx = assoc.accepted_contexts[-1]
    req = C_STORE()
    req.MessageID, req.Priority = 7, 2
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = sop_class, sop_instance  # None: left out of the command
    req.DataSet = io.BytesIO(body)
    assoc._reactor_checkpoint.clear()  # our own reads of the response (as pynetdicom's send_* methods do)
    while not assoc._is_paused:
        time.sleep(0.001)
    assoc.dimse.send_msg(req, cx.context_id)
    _, rsp = assoc.dimse.get_msg(block=True)
    assoc._reactor_checkpoint.set()
    return rsp, assoc


def _leftovers(store: Store) -> list[Path]:
    return sorted(store.tmp_dir.iterdir())


def _spooled(store: Store, ds: pydicom.Dataset) -> bytes:
    [rec] = [r for r in store.study_instances(ds.StudyInstanceUID) if r.sop_instance_uid == ds.SOPInstanceUID]
    return (store.data_dir / rec.path).read_bytes()


@pytest.mark.parametrize(("rows", "columns"), [(17, 33), (1031, 517), (2051, 1999)])
def test_pynetdicom_sender_spools_byte_identical_files(node, rows, columns):
    """Small, ~1 MiB and ~8 MiB (over two 4 MiB PDUs): the spool file is what the in-memory path gave."""
    cfg, store = node
    ds = make_image_dataset(rows=rows, columns=columns)
    assoc = scu(cfg.node.port, contexts=[CR_IMAGE_STORAGE], syntaxes=[ExplicitVRLittleEndian])
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    assert _spooled(store, ds) == _expected_file(ds, _body(ds))
    assert _leftovers(store) == []


def test_dcmtk_storescu_sender_spools_byte_identical_files(node, tmp_path):
    if not shutil.which("storescu"):
        pytest.skip("DCMTK storescu not installed")
    cfg, store = node
    sent = []
    for rows, columns in ((9, 7), (1501, 1203)):
        ds = make_image_dataset(rows=rows, columns=columns)
        path = tmp_path / f"{rows}.dcm"
        ds.save_as(path, enforce_file_format=True)
        sent.append(ds)
        run = subprocess.run(["storescu", "-xe", "-aet", SCU_AET, "-aec", "DXRNODE", HOST, str(cfg.node.port),
                              str(path)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
    for ds in sent:
        spooled = _spooled(store, ds)
        assert spooled[128:132] == b"DICM"
        assert pydicom.dcmread(io.BytesIO(spooled)).file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert bytes(chunked_body(spooled)) == _body(ds)
    assert _leftovers(store) == []


def chunked_body(data: bytes) -> memoryview:
    from node.spool.files import dataset_body
    return memoryview(dataset_body(data))


@pytest.mark.parametrize(("rows", "cut"), [(16, 100), (1024, 700), (1024, 1_500_000)])
def test_truncated_instance_is_refused_and_leaves_no_file(node, rows, cut):
    cfg, store = node
    ds = make_image_dataset(rows=rows, columns=rows)
    body = _body(ds)
    rsp, assoc = _send_request(cfg.node.port, body[:-cut], sop_class=ds.SOPClassUID, sop_instance=ds.SOPInstanceUID)
    assoc.release()
    assert rsp.Status == 0xA900, rsp.ErrorComment
    assert "pixel data holds" in rsp.ErrorComment or "PixelData" in rsp.ErrorComment
    assert not store.has_instance(ds.SOPInstanceUID)
    assert _leftovers(store) == []
    assert not (store.spool_dir / ds.StudyInstanceUID).exists()


@pytest.mark.parametrize("missing", ["instance", "class", "both"])
def test_request_without_affected_uids_is_refused_and_the_node_keeps_serving(node, caplog, missing):
    """pynetdicom 3.0.4's chunked mode raised inside the DUL reactor here (a dead association
    thread, a traceback); now the peer gets 0xC210 and the association goes on."""
    cfg, store = node
    caplog.set_level("INFO")
    ds = make_image_dataset(rows=16, columns=16)
    rsp, assoc = _send_request(cfg.node.port, _body(ds),
                               sop_class=None if missing in ("class", "both") else ds.SOPClassUID,
                               sop_instance=None if missing in ("instance", "both") else ds.SOPInstanceUID)
    assert rsp is not None and rsp.Status == 0xC210
    assert "Affected SOP UIDs" in rsp.ErrorComment
    assert assoc.is_established
    good = make_image_dataset(rows=16, columns=16)
    assert assoc.send_c_store(good).Status == 0x0000  # the same association still serves
    assoc.release()
    assert not store.has_instance(ds.SOPInstanceUID) and store.has_instance(good.SOPInstanceUID)
    assert _leftovers(store) == []
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert any("reason=invalid_request" in r.getMessage() for r in caplog.records)


def test_duplicates_same_bytes_stored_once_changed_replaced(node):
    cfg, store = node
    ds = make_image_dataset(rows=1100, columns=1001)  # over 1 MiB: compared file to file
    assoc = scu(cfg.node.port, contexts=[CR_IMAGE_STORAGE], syntaxes=[ExplicitVRLittleEndian])
    assert assoc.send_c_store(ds).Status == 0x0000
    first = _spooled(store, ds)
    assert assoc.send_c_store(ds).Status == 0x0000  # the same bytes: Success, nothing written
    assert _spooled(store, ds) == first
    study_dir = store.spool_path(ds.StudyInstanceUID, ds.SOPInstanceUID).parent
    assert len(list(study_dir.iterdir())) == 1
    ds.ImageLaterality = "R"  # the corrected re-send: [study] on_changed_duplicate = "replace"
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    assert pydicom.dcmread(io.BytesIO(_spooled(store, ds))).ImageLaterality == "R"
    assert len(list(study_dir.iterdir())) == 1  # the first version removed
    assert _leftovers(store) == []


def test_changed_duplicate_rejected_by_policy(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[study]\n", '[study]\non_changed_duplicate = "reject"\n'))
    cfg = load_config(path)
    store = Store(cfg.data_dir)
    server = start_scp(cfg, store)
    try:
        ds = make_image_dataset(rows=1100, columns=1001)
        assoc = scu(cfg.node.port, contexts=[CR_IMAGE_STORAGE], syntaxes=[ExplicitVRLittleEndian])
        assert assoc.send_c_store(ds).Status == 0x0000
        first = _spooled(store, ds)
        ds.ImageLaterality = "R"
        assert assoc.send_c_store(ds).Status == 0x0111
        assoc.release()
        assert _spooled(store, ds) == first
        assert _leftovers(store) == []
    finally:
        server.shutdown()
        store.close()


def test_deflated_instance_stored_and_deflate_bomb_refused_without_files(node):
    cfg, store = node
    ds = make_image_dataset(rows=64, columns=64)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    assoc = scu(cfg.node.port, contexts=[CR_IMAGE_STORAGE], syntaxes=[DeflatedExplicitVRLittleEndian])
    assert assoc.send_c_store(ds).Status == 0x0000
    spooled = pydicom.dcmread(io.BytesIO(_spooled(store, ds)))
    assert spooled.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert spooled.PixelData == ds.PixelData
    bomb = make_image_dataset(rows=64, columns=64)
    bomb.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bomb.add_new(0x00091010, "OB", bytes(8 << 20))  # 8 MiB of zeros: inflates past the 4 MiB limit
    status = assoc.send_c_store(bomb)
    assoc.release()
    assert status.Status == 0xC210 and "max_decompr" in status.ErrorComment
    assert not store.has_instance(bomb.SOPInstanceUID)
    assert _leftovers(store) == []


def test_rule_dropped_instance_leaves_no_file(node):
    cfg, store = node
    ds = make_image_dataset(rows=1024, columns=1024, body_part="CHEST")
    assoc = scu(cfg.node.port, contexts=[CR_IMAGE_STORAGE], syntaxes=[ExplicitVRLittleEndian])
    assert assoc.send_c_store(ds).Status == 0x0000  # filtered: Success, dropped
    assoc.release()
    assert not store.has_instance(ds.SOPInstanceUID)
    assert not (store.spool_dir / ds.StudyInstanceUID).exists()
    assert _leftovers(store) == []


_NODE_SCRIPT = textwrap.dedent("""
    import sys
    from node.config import load_config
    from node.receive.scp import start_scp
    from node.spool import Store
    cfg = load_config(sys.argv[1])
    store = Store(cfg.data_dir)
    server = start_scp(cfg, store)
    print("ready", flush=True)
    for line in sys.stdin:  # "hwm": the process's peak resident memory so far (kB)
        status = open("/proc/self/status").read()
        print([l.split()[1] for l in status.splitlines() if l.startswith("VmHWM")][0], flush=True)
    server.shutdown()
""")


def test_receiving_a_100_mb_instance_does_not_hold_it_in_memory(tmp_path):
    """Peak resident memory of a node process receiving one 100 MB instance grows by far less than
    the instance (the in-memory path held it ~3 times: the assembled data set, its copy, the spool write)."""
    cfg = make_config(tmp_path, "[limits]\nmax_pixel_bytes = 0\n")
    proc = subprocess.Popen([sys.executable, "-c", _NODE_SCRIPT, str(tmp_path / "node.toml")], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assoc = wait_until(lambda: (a := scu(cfg.node.port, contexts=[CR_IMAGE_STORAGE],
                                             syntaxes=[ExplicitVRLittleEndian])).is_established and a,
                           30, "the node's SCP")
        assoc.network_timeout = assoc.dimse_timeout = 300  # pynetdicom takes a while to send 100 MB
        warm = make_image_dataset(rows=1024, columns=1024)  # 2 MiB: every code path once
        assert assoc.send_c_store(warm).Status == 0x0000
        before = _hwm_kb(proc)
        big = make_image_dataset(rows=7240, columns=7240)  # 16-bit: 104,838,400 bytes of pixels
        assert assoc.send_c_store(big).Status == 0x0000
        assoc.release()
        growth_mb = (_hwm_kb(proc) - before) / 1024
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    store = Store(cfg.data_dir)
    [rec] = store.study_instances(big.StudyInstanceUID)
    assert rec.size_bytes > 100_000_000
    store.close()
    print(f"peak resident growth receiving {rec.size_bytes / 1e6:.0f} MB: {growth_mb:.1f} MiB")
    assert growth_mb < 30, f"receiving a {rec.size_bytes} byte instance grew the peak by {growth_mb:.0f} MiB"


def _hwm_kb(proc: subprocess.Popen) -> int:
    proc.stdin.write("hwm\n")
    proc.stdin.flush()
    return int(proc.stdout.readline())


def test_install_refuses_another_pynetdicom_version(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(chunked.pynetdicom, "__version__", "9.9.9")
    assert chunked.install(object(), tmp_path) is False
    assert any("event=chunked_receive_off" in r.getMessage() for r in caplog.records)



def test_association_aborted_mid_data_set_leaves_no_file(node):
    """A peer that sends part of a large data set and aborts: the partial file goes with the association."""
    from pynetdicom.dimse_messages import C_STORE_RQ

    cfg, store = node
    ds = make_image_dataset(rows=2048, columns=2048)  # 8 MiB: three 4 MiB PDUs
    assoc = scu(cfg.node.port, contexts=[CR_IMAGE_STORAGE], syntaxes=[ExplicitVRLittleEndian])
    req = C_STORE()
    req.MessageID, req.Priority = 9, 2
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    req.DataSet = io.BytesIO(_body(ds))
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    pdus = list(msg.encode_msg(assoc.accepted_contexts[-1].context_id, assoc.acceptor.maximum_length))
    assert len(pdus) >= 3
    for pdu in pdus[:2]:  # the command and the first 4 MiB of the data set
        assoc.dul.send_pdu(pdu)
    wait_until(lambda: _leftovers(store), 10, "the partial file in tmp/")
    assoc.abort()
    wait_until(lambda: not _leftovers(store), 10, "the partial file removed")
    assert not store.has_instance(ds.SOPInstanceUID)


@pytest.mark.parametrize("where", ["tmp_path", "/dev/shm"])
def test_spool_writer_writes_exact_bytes_from_odd_fragments(tmp_path, where):
    """Fragments of odd sizes around the 2 MiB staging buffer: the finished file holds exactly the
    bytes written, through O_DIRECT where the filesystem takes it (the filesystem's own answer)."""
    import os
    import random

    directory = tmp_path if where == "tmp_path" else Path(where)
    if not directory.is_dir():
        pytest.skip(f"{where} is not here")
    rng = random.Random(3)
    data = rng.randbytes(CHUNK_BYTES * 3 + 4097)
    writer = chunked.SpoolWriter(directory)
    try:
        done = 0
        for size in (1, 127, 4, 300, CHUNK_BYTES - 432, CHUNK_BYTES + 5, 3 * 4096 + 1):
            writer.write(data[done:done + size])
            done += size
        writer.write(bytearray(data[done:]))
        writer.file.flush()
        path = writer.finish()
        assert path.read_bytes() == data and writer.size == len(data)
        probe = directory / f".probe.{os.getpid()}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644))
            direct_ok = True
        except OSError:
            direct_ok = False
        finally:
            probe.unlink(missing_ok=True)
        assert writer.direct == direct_ok
    finally:
        writer.close()
    assert not path.exists()  # close() removes a file that was not moved away


def test_spool_writer_falls_back_when_o_direct_is_refused_at_write_time(tmp_path, monkeypatch):
    """A filesystem that opens with O_DIRECT and then refuses the write (EINVAL): the rest goes
    plainly. The kernel's real EINVAL, got from a staging buffer one byte off alignment."""
    import ctypes
    import mmap

    writer = chunked.SpoolWriter(tmp_path)
    if not writer.direct:
        pytest.skip("this filesystem refuses O_DIRECT at open")
    backing = mmap.mmap(-1, CHUNK_BYTES + 4096)
    monkeypatch.setattr(chunked.SpoolWriter, "_release_buffer", lambda self: setattr(self, "_buffer", None))
    writer._buffer = (ctypes.c_char * CHUNK_BYTES).from_buffer(backing, 1)
    data = bytes(range(256)) * (CHUNK_BYTES // 128 + 3)  # two buffers and a tail
    try:
        writer.write(data)
        assert not writer.direct
        assert writer.finish().read_bytes() == data
    finally:
        writer.close()
        backing.close()
