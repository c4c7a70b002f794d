"""STOW-RS receive, health and readiness of node/dicomweb.py, in process (real Store, real ingest).

The ASGI app runs under Starlette's TestClient; the integration tests run it under uvicorn
inside ``dxr-node serve``. Each bad request must get its status and leave nothing stored: no
instance row, no spool file, no temporary part file.
"""

from __future__ import annotations

import io
import itertools
import random
import sqlite3
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
import warnings

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its TestClient; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from node.config import load_config
from node.dicom import STATUS
from node.http.app import create_app
from node.receive.multipart import MultipartError, MultipartParser
from node.spool import Store
from tests import dicom_samples
from tests.node.node_helpers import encode

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOUNDARY = "dxr-test-boundary-7f3a"
CT_OK = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'


# ------------------------------------------------------------------------------ helpers
def small_image(study_uid: str | None = None, **kw) -> pydicom.Dataset:
    return dicom_samples.make_image_dataset(study_uid, rows=64, columns=64, **kw)


def multipart(parts: list[bytes], *, boundary: str = BOUNDARY, part_type: str = "application/dicom",
              preamble: bytes = b"", close: bool = True) -> bytes:
    out = bytearray(preamble)
    for p in parts:
        out += f"\r\n--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + p
    if close:
        out += f"\r\n--{boundary}--\r\n".encode()
    return bytes(out)


def write_config(tmp: Path, *, max_body_bytes: int = 50_000_000, min_free_bytes: int = 0) -> Path:
    path = tmp / "node.toml"
    path.write_text(f"""
[node]
ae_title = "DXRNODE"
data_dir = "var"
[[sources]]
ae_title = "TESTSCU"
[[destinations]]
name = "outbox"
type = "folder"
[http]
bind = "127.0.0.1"
port = 8080
token = "{TOKEN}"
max_body_bytes = {max_body_bytes}
[disk]
min_free_bytes = {min_free_bytes}
""")
    return path


class Node:
    """The app plus what it stored."""

    def __init__(self, tmp: Path, **cfg):
        tmp.mkdir(parents=True, exist_ok=True)
        self.config = load_config(write_config(tmp, **cfg))
        self.store = Store(self.config.data_dir)
        self.client = TestClient(create_app(self.config, self.store), raise_server_exceptions=False)

    def post(self, body: bytes, *, content_type: str = CT_OK, headers=None, study_uid: str | None = None):
        url = "/dicomweb/studies" + (f"/{study_uid}" if study_uid else "")
        h = {"Content-Type": content_type, **AUTH, **(headers or {})}
        return self.client.post(url, content=body, headers=h)

    def stored_uids(self) -> list[str]:
        with sqlite3.connect(self.config.db_path) as c:
            return [r[0] for r in c.execute("SELECT sop_instance_uid FROM instances ORDER BY sop_instance_uid")]

    def spool_files(self) -> list[Path]:
        return sorted(p for p in self.store.spool_dir.rglob("*") if p.is_file())

    def tmp_files(self) -> list[Path]:
        return sorted(p for p in self.store.tmp_dir.iterdir())

    def assert_nothing_stored(self):
        assert self.stored_uids() == []
        assert self.spool_files() == []
        assert self.tmp_files() == []


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def failed_items(resp) -> list[pydicom.Dataset]:
    ds = pydicom.Dataset.from_json(resp.json())
    return list(ds.get("FailedSOPSequence", []))


def referenced_items(resp) -> list[pydicom.Dataset]:
    ds = pydicom.Dataset.from_json(resp.json())
    return list(ds.get("ReferencedSOPSequence", []))


# ------------------------------------------------------------------------------ multipart parser
def _parse(body: bytes, boundary: bytes, chunk_sizes) -> list[tuple[dict, bytes]]:
    parts: list[list] = []
    p = MultipartParser(boundary, lambda h: parts.append([h, bytearray()]),
                        lambda d: parts[-1][1].extend(d), lambda: None)
    pos = 0
    for size in chunk_sizes:
        if pos >= len(body):
            break
        p.feed(body[pos:pos + size])
        pos += size
    if pos < len(body):
        p.feed(body[pos:])
    p.close()
    return [(h, bytes(b)) for h, b in parts]


def test_parser_gives_parts_back_whatever_the_chunking():
    rng = random.Random(7)
    payloads = [bytes(rng.getrandbits(8) for _ in range(n)) for n in (0, 1, 300, 1000)]
    # A payload that contains most of the delimiter must not split a part.
    payloads.append(b"xx\r\n--" + BOUNDARY.encode()[:-1] + b"yy")
    body = multipart(payloads, preamble=b"preamble to ignore")
    expected = [({"content-type": "application/dicom"}, p) for p in payloads]
    for size in (1, 2, 3, 7, 64, 1000, len(body)):
        assert _parse(body, BOUNDARY.encode(), itertools.repeat(size)) == expected, size
    for _ in range(20):
        sizes = [rng.randint(1, 50) for _ in range(len(body))]
        assert _parse(body, BOUNDARY.encode(), sizes) == expected


def test_parser_accepts_first_delimiter_without_crlf_and_padding():
    body = f"--{BOUNDARY}  \r\nContent-Type: application/dicom\r\n\r\nabc\r\n--{BOUNDARY}--".encode()
    assert _parse(body, BOUNDARY.encode(), [5]) == [({"content-type": "application/dicom"}, b"abc")]


@pytest.mark.parametrize("body, why", [
    (multipart([b"abc"], close=False), "ended before the closing"),
    (b"no delimiter at all", "no multipart part"),
    (f"--{BOUNDARY}\r\nbad header line\r\n\r\nabc\r\n--{BOUNDARY}--".encode(), "malformed part header"),
    (f"--{BOUNDARY}junk\r\n\r\nabc\r\n--{BOUNDARY}--".encode(), "unexpected characters"),
])
def test_parser_rejects_malformed_bodies(body, why):
    with pytest.raises(MultipartError, match=why):
        _parse(body, BOUNDARY.encode(), [len(body)])


# ------------------------------------------------------------------------------ STOW-RS: success paths
def test_stow_stores_a_study_like_c_store(node: Node):
    study = generate_uid()
    datasets = [small_image(study, instance_number=i, seed=i) for i in (1, 2)]
    resp = node.post(multipart([encode(d) for d in datasets]))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/dicom+json"
    refs = referenced_items(resp)
    assert sorted(r.ReferencedSOPInstanceUID for r in refs) == sorted(d.SOPInstanceUID for d in datasets)
    assert all(r.ReferencedSOPClassUID == dicom_samples.CR_IMAGE_STORAGE for r in refs)
    assert node.stored_uids() == sorted(d.SOPInstanceUID for d in datasets)
    # Same layout, same bytes, same study grouping as the C-STORE path.
    for d in datasets:
        spooled = node.store.spool_path(study, d.SOPInstanceUID)
        assert spooled.read_bytes() == encode(d)
    assert [r.study_instance_uid for r in node.store.study_instances(study)] == [study, study]
    with sqlite3.connect(node.config.db_path) as c:
        assert {r[0] for r in c.execute("SELECT source FROM instances")} == {"dicomweb"}
        assert c.execute("SELECT state FROM studies WHERE study_instance_uid=?", (study,)).fetchone() == ("receiving",)
    assert node.tmp_files() == []


def test_stow_with_study_in_url(node: Node):
    study = generate_uid()
    ds = small_image(study)
    resp = node.post(multipart([encode(ds)]), study_uid=study)
    assert resp.status_code == 200, resp.text
    assert node.stored_uids() == [ds.SOPInstanceUID]


def test_duplicate_instance_is_stored_once_and_answered_as_stored(node: Node):
    ds = small_image()
    first = node.post(multipart([encode(ds)]))
    again = node.post(multipart([encode(ds), encode(ds)]))  # again, and twice in one request
    assert first.status_code == 200 and again.status_code == 200, again.text
    assert [r.ReferencedSOPInstanceUID for r in referenced_items(again)] == [ds.SOPInstanceUID] * 2
    assert node.stored_uids() == [ds.SOPInstanceUID]
    assert len(node.spool_files()) == 1
    with sqlite3.connect(node.config.db_path) as c:
        assert c.execute("SELECT COUNT(*) FROM studies").fetchone() == (1,)


def test_instances_the_rules_drop_are_acknowledged_not_stored(node: Node):
    ds = small_image(body_part="CHEST")
    resp = node.post(multipart([encode(ds)]))
    assert resp.status_code == 200
    assert [r.ReferencedSOPInstanceUID for r in referenced_items(resp)] == [ds.SOPInstanceUID]
    assert node.stored_uids() == []


# ------------------------------------------------------------------------------ STOW-RS: bad requests
def _assert_json_error(resp, status: int):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["status"] == status and body["error"]
    assert "Traceback" not in resp.text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": "Bearer "}])
def test_missing_or_wrong_token_is_401(node: Node, headers):
    body = multipart([encode(small_image())])
    resp = node.client.post("/dicomweb/studies", content=body, headers={"Content-Type": CT_OK, **headers})
    _assert_json_error(resp, 401)
    assert resp.headers["www-authenticate"].startswith("Bearer")
    node.assert_nothing_stored()


@pytest.mark.parametrize("content_type", [
    "application/dicom",
    'multipart/related; type="application/dicom+json"; boundary="x"',
    "multipart/form-data; boundary=x",
    "text/plain",
])
def test_wrong_content_type_is_415(node: Node, content_type):
    resp = node.post(multipart([encode(small_image())]), content_type=content_type)
    _assert_json_error(resp, 415)
    node.assert_nothing_stored()


def test_missing_boundary_and_truncated_body_are_400(node: Node):
    body = multipart([encode(small_image())])
    _assert_json_error(node.post(body, content_type='multipart/related; type="application/dicom"'), 400)
    good = small_image()
    cut = multipart([encode(good), encode(small_image())])[:-500]  # second part cut, no closing delimiter
    resp = node.post(cut)
    _assert_json_error(resp, 400)
    assert "nothing was stored" in resp.json()["error"]
    node.assert_nothing_stored()  # the complete first part is not stored either


def test_part_that_is_not_dicom_is_400(node: Node):
    resp = node.post(multipart([b"%PDF-1.4 this is not DICOM" * 20]))
    assert resp.status_code == 400, resp.text
    [item] = failed_items(resp)
    assert item.FailureReason == STATUS["cannot_understand"]
    node.assert_nothing_stored()


def test_truncated_part_is_400_with_its_uid(node: Node):
    ds = small_image()
    data = encode(ds)
    resp = node.post(multipart([data[: len(data) - 3000]]))
    assert resp.status_code == 400, resp.text
    [item] = failed_items(resp)
    assert item.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    # The header parses (the UID above comes from it); the pixel data is shorter than Rows x Columns
    # x BitsAllocated says, so the data set does not match its SOP class (0xA900), not "cannot understand".
    assert item.FailureReason == STATUS["dataset_mismatch"]
    node.assert_nothing_stored()


def test_one_good_one_bad_part_is_202(node: Node):
    good = small_image()
    resp = node.post(multipart([encode(good), b"not dicom"]))
    assert resp.status_code == 202, resp.text
    assert [r.ReferencedSOPInstanceUID for r in referenced_items(resp)] == [good.SOPInstanceUID]
    assert len(failed_items(resp)) == 1
    assert node.stored_uids() == [good.SOPInstanceUID]
    assert node.tmp_files() == []


def test_study_uid_mismatch_is_409(node: Node):
    ds = small_image()
    other = generate_uid()
    resp = node.post(multipart([encode(ds)]), study_uid=other)
    assert resp.status_code == 409, resp.text
    [item] = failed_items(resp)
    assert item.FailureReason == STATUS["study_uid_mismatch"] == 0xA901
    assert item.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    node.assert_nothing_stored()


def test_unsupported_sop_class_is_409(node: Node):
    ds = small_image()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = dicom_samples.ENCAPSULATED_PDF_STORAGE
    resp = node.post(multipart([encode(ds)]))
    assert resp.status_code == 409, resp.text
    assert failed_items(resp)[0].FailureReason == STATUS["sop_class_not_supported"]
    node.assert_nothing_stored()


def test_invalid_uid_in_url_is_400(node: Node):
    _assert_json_error(node.post(multipart([encode(small_image())]), study_uid="1.2.abc"), 400)
    node.assert_nothing_stored()


def test_oversized_body_is_413_with_and_without_content_length(tmp_path: Path):
    node = Node(tmp_path, max_body_bytes=15_000)
    body = multipart([encode(small_image()), encode(small_image())])
    assert len(body) > 15_000
    _assert_json_error(node.post(body), 413)
    node.assert_nothing_stored()
    # Chunked (no Content-Length): cut off while streaming.
    resp = node.post(iter([body[i:i + 4096] for i in range(0, len(body), 4096)]))
    _assert_json_error(resp, 413)
    node.assert_nothing_stored()
    # Under the limit it is accepted.
    ok = multipart([encode(small_image())])
    assert len(ok) < 15_000
    assert node.post(ok).status_code == 200


def test_parts_beyond_the_memory_budget_go_through_temporary_files(node: Node, monkeypatch):
    import node.receive.stow as stow

    monkeypatch.setattr(stow, "MEMORY_BUDGET_BYTES", 12_000)  # ~1.5 of these small parts
    datasets = [small_image(seed=k) for k in range(3)]
    parts = [encode(d) for d in datasets]
    assert all(8_000 < len(p) < 12_000 for p in parts)
    seen_tmp: list[list[Path]] = []
    real_store_part = stow.StowHandler._store_part

    def spy(self, part, client, study):
        seen_tmp.append(node.tmp_files())
        return real_store_part(self, part, client, study)

    monkeypatch.setattr(stow.StowHandler, "_store_part", spy)
    resp = node.post(multipart(parts))
    assert resp.status_code == 200, resp.text
    assert len(seen_tmp[0]) == 2  # part 0 in memory; part 1 spilled on overflow, part 2 straight to a file
    assert node.stored_uids() == sorted(d.SOPInstanceUID for d in datasets)
    assert [node.store.spool_path(d.StudyInstanceUID, d.SOPInstanceUID).read_bytes() for d in datasets] == parts
    assert node.tmp_files() == []
    # A cut-short body with spilled parts leaves no temporary file either.
    more = [encode(small_image(seed=k)) for k in range(3)]
    assert node.post(multipart(more)[:-100]).status_code == 400
    assert node.tmp_files() == [] and len(node.stored_uids()) == 3


def test_unknown_paths_and_methods_get_json_errors(node: Node):
    _assert_json_error(node.client.get("/dicomweb/studies"), 405)
    _assert_json_error(node.client.get("/nope"), 404)


# ------------------------------------------------------------------------------ health, readiness, watermark
def test_healthz_and_readyz(node: Node):
    assert node.client.get("/healthz").json()["status"] == "ok"
    resp = node.client.get("/readyz", headers=AUTH)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["ready"] is True and body["reasons"] == []
    assert body["checks"]["spool"]["ok"] and body["checks"]["database"]["ok"] and body["checks"]["disk"]["ok"]
    assert body["checks"]["destinations"] == {"outbox": {"type": "folder", "last_export": None, "ok": True}}


def test_watermark_makes_node_unready_and_stow_507(tmp_path: Path):
    node = Node(tmp_path, min_free_bytes=2**62)  # more than any disk: simulates a full disk
    resp = node.client.get("/readyz", headers=AUTH)
    assert resp.status_code == 503
    [reason] = resp.json()["reasons"]
    assert "min_free_bytes" in reason and "below" in reason
    _assert_json_error(node.post(multipart([encode(small_image())])), 507)
    node.assert_nothing_stored()


def test_readyz_reports_unreadable_database(node: Node):
    node.config.db_path.rename(node.config.db_path.with_suffix(".moved"))
    resp = node.client.get("/readyz", headers=AUTH)
    assert resp.status_code == 503
    assert any("database" in r for r in resp.json()["reasons"])


def test_part_without_preamble_is_spooled_as_part10(node: Node):
    """pydicom 3 writes an in-memory dataset without the preamble unless told; such parts are fixed up."""
    ds = small_image()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds)  # file meta, no preamble / DICM
    assert buf.getvalue()[128:132] != b"DICM"
    resp = node.post(multipart([buf.getvalue()]))
    assert resp.status_code == 200, resp.text
    spooled = node.store.spool_path(ds.StudyInstanceUID, ds.SOPInstanceUID)
    assert pydicom.dcmread(spooled).SOPInstanceUID == ds.SOPInstanceUID  # a proper Part 10 file


# ------------------------------------------------------------------------------ STOW-RS export (node -> node)
@pytest.fixture
def peer(tmp_path: Path):
    """A second node's HTTP server under uvicorn on a free port (the export target)."""
    from node.http.server import HttpServer
    from tests.integration.servers import free_port

    target = Node(tmp_path / "peer")
    server = HttpServer(target.client.app, "127.0.0.1", free_port()).start()
    target.url = f"http://127.0.0.1:{server.port}/dicomweb"
    try:
        yield target
    finally:
        server.stop()


def _write(tmp: Path, datasets) -> list[Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    return [dicom_samples.save(d, tmp / f"{d.SOPInstanceUID}.dcm") for d in datasets]


def test_send_stow_delivers_with_bearer_token_and_reports_per_instance(peer: Node, tmp_path: Path):
    from node.config import DestinationConfig
    from node.export.stow import send_stow

    good = small_image()
    pdf = small_image()
    pdf.SOPClassUID = pdf.file_meta.MediaStorageSOPClassUID = dicom_samples.ENCAPSULATED_PDF_STORAGE
    paths = _write(tmp_path / "out", [good, pdf]) + [tmp_path / "missing.dcm"]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    dest = DestinationConfig(name="peer", type="dicomweb", url=peer.url, token_file=token_file)
    results = send_stow(dest, paths)
    assert [r.ok for r in results] == [True, False, False]
    assert results[0].sop_instance_uid == good.SOPInstanceUID
    assert "FailureReason 0x0122" in results[1].error
    assert "cannot read output file" in results[2].error
    assert peer.stored_uids() == [good.SOPInstanceUID]


@pytest.mark.parametrize("auth", [{"token": "wrong"}, {"username": "u", "password": "p"}, {}])
def test_send_stow_without_the_right_token_fails_with_401(peer: Node, tmp_path: Path, auth):
    from node.config import DestinationConfig
    from node.export.stow import send_stow

    dest = DestinationConfig(name="peer", type="dicomweb", url=peer.url, **auth)
    [result] = send_stow(dest, _write(tmp_path / "out", [small_image()]))
    assert not result.ok and "HTTP 401" in result.error
    assert peer.stored_uids() == []


def test_dicomweb_destination_backoff_failed_and_queue_retry(tmp_path: Path, capsys):
    """type = "dicomweb" through the exporter: down -> queued with backoff -> failed at the cap;
    `dxr-node queue retry` -> sent once the peer is up."""
    from node.cli import main as cli_main
    from node.http.server import HttpServer
    from node.export.exporter import deliver
    from tests.integration.servers import free_port

    port = free_port()
    sender = Node(tmp_path / "sender")
    cfg_path = sender.config.path
    cfg_path.write_text(cfg_path.read_text().replace(
        '[[destinations]]\nname = "outbox"\ntype = "folder"',
        f'[[destinations]]\nname = "peer"\ntype = "dicomweb"\nurl = "http://127.0.0.1:{port}/dicomweb"\n'
        f'token = "{TOKEN}"\n[export]\nretry_base_delay_seconds = 0.1\nmax_attempts = 2'))
    config = load_config(cfg_path)
    store = sender.store
    out = dicom_samples.save(small_image(), store.outputs_dir / "s" / "o.dcm")
    sop = pydicom.dcmread(out, stop_before_pixels=True).SOPInstanceUID
    assert store.store_instance(b"x", sop_instance_uid="1.2.9", study_instance_uid="1.2.8") == "stored"
    [job] = store.complete_due_studies(0, now=time.time() + 1)
    store.claim_job(1)
    store.finish_job(job.id, [(sop, dicom_samples.CR_IMAGE_STORAGE, "other", str(out.relative_to(store.data_dir)))],
                     ["peer"])

    [exp] = store.claim_due_exports()["peer"]
    assert deliver(config, store, "peer", [exp]) == (0, 1)  # nobody listening yet
    [after] = store.list_exports()
    assert after.state == "queued" and after.attempts == 1 and "ConnectionError" in after.last_error
    assert after.next_attempt_at > after.updated_at  # backoff
    assert store.claim_due_exports() == {}  # not before the backoff delay
    [exp] = store.claim_due_exports(now=time.time() + 10)["peer"]
    assert deliver(config, store, "peer", [exp]) == (0, 1)
    [after] = store.list_exports()
    assert after.state == "failed" and after.attempts == 2

    assert cli_main(["queue", "retry", f"E{after.id}", "--config", str(cfg_path)]) == 0
    assert "queued" in capsys.readouterr().out
    target = Node(tmp_path / "target")
    server = HttpServer(target.client.app, "127.0.0.1", port).start()
    try:
        [exp] = store.claim_due_exports(now=time.time() + 1)["peer"]
        assert deliver(config, store, "peer", [exp]) == (1, 0)
    finally:
        server.stop()
    [after] = store.list_exports()
    assert after.state == "sent" and after.attempts == 1
    assert target.stored_uids() == [sop]


def test_readyz_reports_a_spool_it_cannot_write(node: Node):
    tmp_dir = node.store.tmp_dir
    tmp_dir.rename(tmp_dir.with_name("tmp.moved"))
    tmp_dir.write_text("a file where the spool's temporary folder should be")  # fails even for root
    try:
        resp = node.client.get("/readyz", headers=AUTH)
    finally:
        tmp_dir.unlink()
        tmp_dir.with_name("tmp.moved").rename(tmp_dir)
    assert resp.status_code == 503
    [reason] = resp.json()["reasons"]
    assert "not writable" in reason and str(tmp_dir) in reason
    assert node.client.get("/readyz", headers=AUTH).status_code == 200


def test_a_part_that_cannot_be_written_to_tmp_dir_is_a_503_and_stores_nothing(node: Node, monkeypatch):
    import node.receive.stow as stow

    monkeypatch.setattr(stow, "MEMORY_BUDGET_BYTES", 12_000)  # the second part goes to a file
    tmp_dir = node.store.tmp_dir
    tmp_dir.rename(tmp_dir.with_name("tmp.moved"))
    tmp_dir.write_text("a file where the spool's temporary folder should be")  # fails even for root
    try:
        resp = node.post(multipart([encode(small_image(seed=k)) for k in range(3)]))
    finally:
        tmp_dir.unlink()
        tmp_dir.with_name("tmp.moved").rename(tmp_dir)
    assert resp.status_code == 503, resp.text
    assert "cannot write the request to disk" in resp.json()["error"]
    node.assert_nothing_stored()


def test_http_server_listens_on_a_tcp_socket_so_asyncio_disables_nagle(node: Node):
    """asyncio sets TCP_NODELAY only on sockets whose proto is TCP; with proto 0 every keep-alive
    response waited ~40 ms for a delayed ACK (found by bench/stow_rate.py)."""
    import socket

    from node.http.server import HttpServer
    from tests.integration.servers import free_port

    server = HttpServer(node.client.app, "127.0.0.1", free_port()).start()
    try:
        assert server._socket.proto == socket.IPPROTO_TCP
        with socket.create_connection(("127.0.0.1", server.port)) as client:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()


def test_token_from_config_or_file_created_once(tmp_path: Path):
    from node.config import ConfigError, HttpConfig
    from node.http.token import load_token

    assert load_token(HttpConfig(token=" abc ")) == "abc"
    token_file = tmp_path / "var" / "http-token"
    first = load_token(HttpConfig(token_file=token_file))
    assert len(first) >= 32 and token_file.stat().st_mode & 0o777 == 0o600
    assert load_token(HttpConfig(token_file=token_file)) == first  # kept across restarts
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_token(HttpConfig(token_file=token_file))
    with pytest.raises(ConfigError, match="needs token or token_file"):
        load_token(HttpConfig())
