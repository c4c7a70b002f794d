"""The Storage SCP in-process, driven by a real pynetdicom SCU over loopback."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

from node.receive.scp import start_scp
from node.spool import Store
from tests.dicom_samples import CR_IMAGE_STORAGE, COMPREHENSIVE_SR_STORAGE, make_image_dataset, make_sr_dataset

from tests.node.node_helpers import SCU_AET, make_config, running_scp, scu


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """One SCP for the module; allow-list: TESTSCU from 127.0.0.1, PINNED only from 10.9.9.9."""
    with running_scp(tmp_path_factory.mktemp("scp"), '[[sources]]\nae_title = "PINNED"\nhost = "10.9.9.9"\n'
                     '[[sources]]\nae_title = "BYNAME"\nhost = "localhost"\n') as (cfg, store):
        yield cfg, store


def _rows(store: Store, sop: str) -> int:
    return len(store._query("SELECT 1 FROM instances WHERE sop_instance_uid=?", (sop,)))


@pytest.mark.parametrize("calling", [SCU_AET, "BYNAME"])
def test_echo_from_an_allowed_source(node, calling):
    _assert_echo(node, calling)


def _assert_echo(node, calling=SCU_AET):
    cfg, _ = node
    assoc = scu(cfg.node.port, calling=calling)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


@pytest.mark.parametrize(
    ("calling", "called", "diagnostic"),
    [("STRANGER", "DXRNODE", 0x03), ("PINNED", "DXRNODE", 0x03), (SCU_AET, "NOTUS", 0x07)],
)
def test_association_rejected_with_reason(node, caplog, calling, called, diagnostic):
    cfg, _ = node
    caplog.set_level("WARNING", logger="dxr.dimse")
    assoc = scu(cfg.node.port, calling=calling, called=called)
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, diagnostic)
    [line] = [r.getMessage() for r in caplog.records if "association_rejected" in r.getMessage()]
    assert f"calling_ae={calling}" in line and "reason=" in line
    if calling == "PINNED":
        assert "host 127.0.0.1 is not allowed" in line


def test_store_then_duplicate_is_stored_once(node, caplog):
    cfg, store = node
    caplog.set_level("INFO", logger="dxr.receive")
    ds = make_image_dataset(rows=32, columns=32)
    assoc = scu(cfg.node.port)
    assert assoc.send_c_store(ds).Status == 0x0000
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    assert _rows(store, ds.SOPInstanceUID) == 1
    [rec] = store.study_instances(ds.StudyInstanceUID)
    spooled = pydicom.dcmread(store.data_dir / rec.path)
    assert spooled.PixelData == ds.PixelData
    assert rec.calling_ae == SCU_AET
    messages = [r.getMessage() for r in caplog.records]
    assert any("event=instance_stored" in m and ds.SOPInstanceUID in m for m in messages)
    assert any("event=instance_duplicate" in m and ds.SOPInstanceUID in m for m in messages)
    assert not any("Quietsample" in m for m in messages), "patient names never reach the log"


REQUIRED_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                     JPEGBaseline8Bit, JPEGLosslessSV1, JPEG2000Lossless, JPEG2000, RLELossless]
CR_DX_SC_SR = [CR_IMAGE_STORAGE, "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1",
               "1.2.840.10008.5.1.4.1.1.7", COMPREHENSIVE_SR_STORAGE]


@pytest.mark.parametrize("syntax", REQUIRED_SYNTAXES)
def test_every_required_transfer_syntax_is_accepted_for_cr_dx_sc_sr(node, syntax):
    cfg, _ = node
    assoc = scu(cfg.node.port, contexts=CR_DX_SC_SR, syntaxes=[syntax])
    try:
        accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
    finally:
        assoc.release()
    assert accepted >= {(uid, syntax) for uid in CR_DX_SC_SR}


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless,
                                    JPEG2000Lossless])
def test_transfer_syntaxes_are_spooled_as_received(node, syntax):
    cfg, store = node
    ds = make_image_dataset(rows=32, columns=32)
    if syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(syntax)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    assoc = scu(cfg.node.port, contexts=[CR_IMAGE_STORAGE], syntaxes=[syntax])
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    [rec] = store.study_instances(ds.StudyInstanceUID)
    assert rec.transfer_syntax_uid == syntax
    assert pydicom.dcmread(store.data_dir / rec.path).file_meta.TransferSyntaxUID == syntax


def _send(port: int, ds, contexts=None):
    assoc = scu(port, contexts=contexts)
    status = assoc.send_c_store(ds)
    assoc.release()
    return status


def test_missing_study_uid_gets_a_failure_status_and_the_node_keeps_serving(node):
    cfg, store = node
    ds = make_image_dataset(rows=16, columns=16)
    del ds.StudyInstanceUID
    status = _send(cfg.node.port, ds)
    assert status.Status == 0xA900
    assert "StudyInstanceUID" in status.ErrorComment
    assert _rows(store, ds.SOPInstanceUID) == 0
    _assert_echo(node)


def test_wrong_pixel_data_length_is_refused(node):
    cfg, store = node
    ds = make_image_dataset(rows=16, columns=16)
    ds.PixelData = ds.PixelData[:100]  # header says 16 x 16 x 16 bit = 512 bytes
    status = _send(cfg.node.port, ds)
    assert status.Status == 0xA900
    assert _rows(store, ds.SOPInstanceUID) == 0


def test_non_image_sr_is_acknowledged_and_dropped(node, caplog):
    cfg, store = node
    caplog.set_level("INFO", logger="dxr.receive")
    sr = make_sr_dataset()
    status = _send(cfg.node.port, sr, contexts=[COMPREHENSIVE_SR_STORAGE])
    assert status.Status == 0x0000
    assert _rows(store, sr.SOPInstanceUID) == 0
    assert any("event=instance_dropped" in r.getMessage() and "sr-or-sc" in r.getMessage() for r in caplog.records)


def test_filtered_chest_image_is_acknowledged_and_dropped(node):
    cfg, store = node
    ds = make_image_dataset(rows=16, columns=16, body_part="CHEST")
    assert _send(cfg.node.port, ds).Status == 0x0000
    assert _rows(store, ds.SOPInstanceUID) == 0


def test_disk_or_database_failure_answers_out_of_resources(tmp_path):
    cfg = make_config(tmp_path)
    store = Store(cfg.data_dir)
    server = start_scp(cfg, store)
    try:
        store.spool_dir.rmdir()
        store.spool_dir.write_bytes(b"")  # spool is now a file: every write fails
        ds = make_image_dataset(rows=16, columns=16, study_uid=generate_uid())
        assert _send(cfg.node.port, ds).Status == 0xA700
        assert _rows(store, ds.SOPInstanceUID) == 0
    finally:
        server.shutdown()
        store.close()


def test_disk_watermark_refuses_with_out_of_resources(tmp_path):
    cfg = make_config(tmp_path, "[disk]\nmin_free_bytes = 1000000000000000\n")  # a petabyte: never free
    store = Store(cfg.data_dir)
    server = start_scp(cfg, store)
    try:
        ds = make_image_dataset(rows=16, columns=16)
        assert _send(cfg.node.port, ds).Status == 0xA700
        assert _rows(store, ds.SOPInstanceUID) == 0
    finally:
        server.shutdown()
        store.close()


def test_truncated_file_sent_raw_is_refused(node, tmp_path):
    """The bytes of a file cut short inside its pixel data, streamed undecoded by the SCU."""
    from pynetdicom import _config

    cfg, store = node
    ds = make_image_dataset(rows=32, columns=32)
    full = tmp_path / "full.dcm"
    ds.save_as(full, enforce_file_format=True)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(full.read_bytes()[:-700])
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = scu(cfg.node.port)
        status = assoc.send_c_store(cut)
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
    assert status.Status == 0xA900
    assert _rows(store, ds.SOPInstanceUID) == 0


def test_the_same_instance_from_concurrent_associations_is_stored_once(node):
    from concurrent.futures import ThreadPoolExecutor

    cfg, store = node
    ds = make_image_dataset(rows=64, columns=64)

    def send(_):
        return _send(cfg.node.port, ds).Status

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(send, range(4)))
    assert statuses == [0x0000] * 4
    assert _rows(store, ds.SOPInstanceUID) == 1
    assert len(list((store.spool_dir / ds.StudyInstanceUID).iterdir())) == 1


def test_data_set_that_contradicts_its_request_is_refused(node):
    from pynetdicom import _config

    cfg, store = node
    ds = make_image_dataset(rows=16, columns=16)  # CR, in the file meta and in the data set
    path = store.data_dir.parent / "mismatch.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    cr, sc = CR_IMAGE_STORAGE.encode(), b"1.2.840.10008.5.1.4.1.1.7"  # same length
    meta_end = raw.index(cr) + len(cr)
    path.write_bytes(raw[:meta_end] + raw[meta_end:].replace(cr, sc, 1))  # the data set now says SC
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file as it is; the request comes from its meta
    try:
        assoc = scu(cfg.node.port)
        status = assoc.send_c_store(path)
        assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
    assert status.Status == 0xA900
    assert status.ErrorComment.startswith("SOPClassUID 1.2.840.10008.5.1.4.1.1.7 differs")
    assert _rows(store, ds.SOPInstanceUID) == 0


def test_recv_exactly_reads_whole_pdus_and_stops_at_close():
    """The SCP's socket read (node.receive.scp.recv_exactly): all bytes asked for, however the
    peer splits them; what arrived when the peer closes (pynetdicom then reports Evt17)."""
    import socket
    import threading
    from types import SimpleNamespace

    from node.receive.scp import recv_exactly

    ours, peer = socket.socketpair()
    payload = bytes(range(256)) * 40_000  # 10 MB, sent in uneven pieces
    sender = threading.Thread(target=lambda: [peer.sendall(payload[i:i + 70_001])
                                              for i in range(0, len(payload), 70_001)])
    sender.start()
    assoc_socket = SimpleNamespace(socket=ours)
    assert recv_exactly(assoc_socket, len(payload) - 5) == payload[:-5]
    sender.join()
    peer.close()
    assert recv_exactly(assoc_socket, 100) == payload[-5:]
    ours.close()


def test_recv_exactly_does_not_allocate_what_a_peer_only_declares():
    """A PDU header may declare up to 4 GiB: the buffer grows with the bytes that arrive."""
    import resource
    import socket
    from types import SimpleNamespace

    from node.receive.scp import recv_exactly

    ours, peer = socket.socketpair()
    peer.sendall(b"x" * 1000)
    peer.close()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    assert recv_exactly(SimpleNamespace(socket=ours), 2**31) == b"x" * 1000
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # not 2 GiB
    ours.close()
