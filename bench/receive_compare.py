"""Side by side: DCMTK storescp, Orthanc and dxr-node receiving the same files from DCMTK storescu.

N x ~10 MB CR instances (written once), sent over one association by ``storescu`` to each
receiver in turn on loopback. For each: instances/s measured at the sender (first request to
last response) and the receiver's CPU ms per instance (utime + stime of its process from
/proc, all threads). storescp writes without fsync; Orthanc writes its storage and SQLite
index (no fsync per instance by default); the node fsyncs the file, its folder and the SQLite
commit before every Success.

    .venv/bin/python bench/receive_compare.py --count 100
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _node import free_port, start_node, stop_node  # noqa: E402 (bench/_node.py)
from receive_rate import cr_dataset  # noqa: E402
from tests.integration.servers import OrthancServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
"""DCMTK's sockets without Nagle's algorithm: otherwise each small response PDU waits for the
peer's delayed ACK (~40 ms per instance), which would bound every receiver at the same rate."""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (all threads)


def wait_for(port: int, called: str, timeout: float = 60.0) -> None:
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(Verification)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assoc = ae.associate("127.0.0.1", port, ae_title=called)
        if assoc.is_established:
            assoc.release()
            return
        time.sleep(0.2)
    raise SystemExit(f"{called} on port {port} did not come up")


def send(files: list[Path], port: int, called: str, pid: int) -> tuple[float, float, bool]:
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    proc = subprocess.run(["storescu", "-aet", "BENCH", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, env=DCMTK_ENV)
    elapsed = time.perf_counter() - start
    time.sleep(0.5)  # let the receiver finish its last bookkeeping before reading its CPU
    return elapsed, cpu_seconds(pid) - cpu0, proc.returncode == 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--rows", type=int, default=2560)
    p.add_argument("--columns", type=int, default=2048)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dxr-compare-", dir=os.environ.get("BENCH_TMP")))
    rows = []
    try:
        files_dir = work / "in"
        files_dir.mkdir()
        template = cr_dataset(generate_uid(), args.rows, args.columns)
        files = []
        for i in range(args.count):
            template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            files.append(files_dir / f"{i:04d}.dcm")
            template.save_as(files[-1], enforce_file_format=True)
        size_mb = files[0].stat().st_size / 1e6

        port = free_port()
        (work / "storescp").mkdir()
        scp = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(work / "storescp"), str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
        try:
            wait_for(port, "STORESCP")
            rows.append(("DCMTK storescp", *send(files, port, "STORESCP", scp.pid)))
        finally:
            scp.terminate()
            scp.wait()

        with OrthancServer(work / "orthanc", node_aet=None) as orthanc:
            wait_for(orthanc.dicom_port, "ORTHANC")
            rows.append(("Orthanc", *send(files, orthanc.dicom_port, "ORTHANC", orthanc.proc.pid)))

        port = free_port()
        (work / "node").mkdir()
        node = start_node(work / "node",
                          f'[node]\nae_title = "DXRNODE"\nbind = "127.0.0.1"\nport = {port}\ndata_dir = "var"\n'
                          'workers = 1\n[study]\nquiet_period_seconds = 3600\n[[sources]]\nae_title = "BENCH"\n'
                          '[[destinations]]\nname = "outbox"\ntype = "folder"\n')
        try:
            wait_for(port, "DXRNODE")
            rows.append(("dxr-node (fsync + SQLite before Success)", *send(files, port, "DXRNODE", node.pid)))
        finally:
            stop_node(node)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.count} x {size_mb:.1f} MB CR, DCMTK storescu, one association, loopback, load "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| receiver | instances/s | CPU ms/instance | all stored |")
    print("|---|---|---|---|")
    for name, elapsed, cpu, ok in rows:
        print(f"| {name} | {args.count / elapsed:.1f} | {cpu * 1000 / args.count:.0f} | {'yes' if ok else 'NO'} |")
    rates = {name.split()[0]: args.count / elapsed for name, elapsed, _, _ in rows}
    if {"DCMTK", "Orthanc", "dxr-node"} <= set(rates):
        print(f"node/Orthanc = {rates['dxr-node'] / rates['Orthanc']:.2f} (target >= 1.5), "
              f"node/storescp = {rates['dxr-node'] / rates['DCMTK']:.2f} (target >= 0.5)")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
