"""STOW-RS receive rate of ``dxr-node serve``: 100 x 10 MB instances in one request, and in 100 requests.

Usage::

    .venv/bin/python bench/stow_rate.py [--count 100] [--size-mb 10] [--data-dir DIR] [--json]

Starts the real node (``dxr-node serve`` with ``[http]``, uvicorn) on free loopback ports with
its data_dir in a temporary folder (or ``--data-dir``, to measure another disk), then POSTs
pre-encoded CR instances (16-bit, one pixel block shared, distinct UIDs) with ``http.client``
so the client costs next to nothing:

* **one request**: all instances as one ``multipart/related`` body (Content-Length set);
* **N requests**: one instance per request, sequentially, over one keep-alive connection.

Each instance is spooled as in production: temporary part file, then ingest (header parse,
filter, spool file with fsync + directory fsync, SQLite row with synchronous=FULL) before the
response. The quiet period is set to an hour so no analysis job competes for the CPU. The
timer runs from the first body byte sent to the response read. Every run checks that the
response lists all instances and that SQLite holds them.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from _node import free_port  # bench/_node.py

REPO = Path(__file__).resolve().parents[1]
BOUNDARY = "dxr-bench-boundary-5b1f"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def make_instances(count: int, size_mb: float, study_uid: str) -> list[bytes]:
    """``count`` encoded CR instances of about ``size_mb`` MB (10**6 bytes) each."""
    side = int(round((size_mb * 1e6 / 2) ** 0.5))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(side, side), dtype=np.uint16).tobytes()
    series_uid = generate_uid()
    out = []
    for k in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
        ds.SOPClassUID = CR_IMAGE_STORAGE
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientID, ds.PatientName = "BENCH", "Bench^Stow"
        ds.Modality, ds.BodyPartExamined, ds.Manufacturer = "CR", "HAND", "Bench Modality"
        ds.InstanceNumber = k + 1
        ds.Rows = ds.Columns = side
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelSpacing = [0.1, 0.1]
        ds.PixelData = pixels
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def _part_header() -> bytes:
    return f"\r\n--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()


def post(conn: http.client.HTTPConnection, token: str, instances: list[bytes]) -> tuple[float, int, dict]:
    """POST the instances as one multipart body; (seconds, status, response JSON)."""
    head = _part_header()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    length = sum(len(head) + len(i) for i in instances) + len(tail)
    started = time.perf_counter()
    conn.putrequest("POST", "/dicomweb/studies")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Type", f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"')
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    for data in instances:
        conn.send(head)
        conn.send(data)
    conn.send(tail)
    resp = conn.getresponse()
    body = resp.read()
    seconds = time.perf_counter() - started
    return seconds, resp.status, json.loads(body) if body else {}


def _referenced(body: dict) -> int:
    return len(body.get("00081199", {}).get("Value", []))


def start_node(workdir: Path, data_dir: Path, token: str) -> tuple[subprocess.Popen, int]:
    http_port = free_port()
    config = workdir / "node.toml"
    config.write_text(f"""
[node]
ae_title = "DXRBENCH"
bind = "127.0.0.1"
port = {free_port()}
data_dir = "{data_dir}"
workers = 1
[study]
quiet_period_seconds = 3600
[[sources]]
ae_title = "BENCH"
[http]
bind = "127.0.0.1"
port = {http_port}
token = "{token}"
max_body_bytes = {4 * 1024**3}
""")
    log = open(workdir / "node.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dxr-node"), "serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2):
                return proc, http_port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"dxr-node did not start; see {workdir / 'node.log'}")


def stop_node(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def _count_rows(data_dir: Path, study_uid: str) -> int:
    with sqlite3.connect(data_dir / "node.sqlite3") as c:
        return c.execute("SELECT COUNT(*) FROM instances WHERE study_instance_uid=?", (study_uid,)).fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--size-mb", type=float, default=10.0)
    ap.add_argument("--data-dir", type=Path, default=None, help="node data_dir (default: a temporary folder)")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args(argv)

    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="dxr-stow-bench-") as tmp:
        workdir = Path(tmp)
        data_dir = (args.data_dir or workdir / "var").absolute()
        proc, port = start_node(workdir, data_dir, token)
        try:
            report: dict = {"count": args.count, "size_mb": args.size_mb, "fsync": True}
            for mode in ("one_request", "per_instance_requests"):
                study_uid = generate_uid()
                instances = make_instances(args.count, args.size_mb, study_uid)
                total_mb = sum(map(len, instances)) / 1e6
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                if mode == "one_request":
                    seconds, status, body = post(conn, token, instances)
                    assert status == 200 and _referenced(body) == args.count, (status, str(body)[:300])
                    latencies = [seconds]
                else:
                    latencies = []
                    for data in instances:
                        seconds, status, body = post(conn, token, [data])
                        assert status == 200 and _referenced(body) == 1, (status, str(body)[:300])
                        latencies.append(seconds)
                    seconds = sum(latencies)
                conn.close()
                rows = _count_rows(data_dir, study_uid)
                assert rows == args.count, f"{rows} rows in SQLite, expected {args.count}"
                report[mode] = {
                    "requests": len(latencies),
                    "seconds": round(seconds, 3),
                    "instances_per_s": round(args.count / seconds, 1),
                    "mb_per_s": round(total_mb / seconds, 1),
                    "median_request_ms": round(1000 * float(np.median(latencies)), 1),
                    "instance_mb": round(total_mb / args.count, 2),
                }
                del instances
            # The node's own split of each request: body received vs parts stored (fsync).
            phases = [line for line in (workdir / "node.log").read_text().splitlines() if "event=stow_stored" in line]
            for mode, lines in (("one_request", phases[:1]), ("per_instance_requests", phases[1:])):
                def total(key: str) -> float:
                    return sum(float(line.split(f"{key}=")[1].split()[0]) for line in lines)
                report[mode]["node_receive_seconds"] = round(total("receive_seconds"), 2)
                report[mode]["node_store_seconds"] = round(total("store_seconds"), 2)
        finally:
            stop_node(proc)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"STOW-RS receive, {args.count} x {report['one_request']['instance_mb']} MB CR, fsync per instance, "
              f"data_dir on {args.data_dir or 'a temporary folder'}")
        for mode, label in (("one_request", "1 request"), ("per_instance_requests", f"{args.count} requests")):
            r = report[mode]
            print(f"  {label:>13}: {r['seconds']:7.2f} s  {r['instances_per_s']:6.1f} instances/s  "
                  f"{r['mb_per_s']:7.1f} MB/s  (median request {r['median_request_ms']} ms; node: receive "
                  f"{r['node_receive_seconds']} s, store {r['node_store_seconds']} s)")
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
