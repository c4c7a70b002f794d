"""Side by side: DCMTK storescp, Orthanc and dxr-node receiving the same files from DCMTK storescu.

N x ~10 MB CR instances (written once), sent over one association by ``storescu`` to each
receiver in turn on loopback. For each: instances/s measured at the sender (first request to
last response) and the receiver's CPU ms per instance (utime + stime of its process from
/proc, all threads). storescp writes without fsync; Orthanc writes its storage and SQLite
index (no fsync per instance by default); the node fsyncs the file, its folder and the SQLite
commit before every Success.

    .venv/bin/python bench/receive_compare.py --count 100 [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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


def _write_files(folder: Path, count: int, rows: int, columns: int) -> list[Path]:
    """``count`` CR files with new UIDs (every round stores new instances, never duplicates)."""
    folder.mkdir(parents=True)
    template = cr_dataset(generate_uid(), rows, columns)
    files = []
    for i in range(count):
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        files.append(folder / f"{i:04d}.dcm")
        template.save_as(files[-1], enforce_file_format=True)
    return files


NAMES = ("DCMTK storescp", "Orthanc", "dxr-node (fsync + SQLite before Success)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of the three receivers in turn (order rotated); medians are reported")
    p.add_argument("--rows", type=int, default=2560)
    p.add_argument("--columns", type=int, default=2048)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dxr-compare-", dir=os.environ.get("BENCH_TMP")))
    results: dict[str, list[tuple[float, float, bool]]] = {name: [] for name in NAMES}
    scp = node = None
    try:
        scp_port, node_port = free_port(), free_port()
        (work / "storescp").mkdir()
        scp = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(work / "storescp"), str(scp_port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
        (work / "node").mkdir()
        node = start_node(work / "node",
                          f'[node]\nae_title = "DXRNODE"\nbind = "127.0.0.1"\nport = {node_port}\ndata_dir = "var"\n'
                          'workers = 1\n[study]\nquiet_period_seconds = 3600\n[[sources]]\nae_title = "BENCH"\n'
                          '[[destinations]]\nname = "outbox"\ntype = "folder"\n')
        with OrthancServer(work / "orthanc", node_aet=None) as orthanc:
            receivers = [(NAMES[0], scp_port, "STORESCP", scp.pid),
                         (NAMES[1], orthanc.dicom_port, "ORTHANC", orthanc.proc.pid),
                         (NAMES[2], node_port, "DXRNODE", node.pid)]
            for _name, port, called, _pid in receivers:
                wait_for(port, called)
            for k in range(args.rounds):
                # The machine's state drifts (other jobs, page-cache writeback): each round runs
                # the three back to back, starting with a different one.
                for name, port, called, pid in receivers[k % 3:] + receivers[:k % 3]:
                    files = _write_files(work / f"in-{k}-{called}", args.count, args.rows, args.columns)
                    results[name].append(send(files, port, called, pid))
                    shutil.rmtree(files[0].parent)
                shutil.rmtree(work / "storescp")
                (work / "storescp").mkdir()
        size_mb = args.rows * args.columns * 2 / 1e6
    finally:
        if scp is not None:
            scp.terminate()
            scp.wait()
        if node is not None:
            stop_node(node)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.count} x {size_mb:.1f} MB CR, DCMTK storescu, one association, loopback, {args.rounds} rounds, "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| receiver | instances/s (median) | per round | CPU ms/instance (median) | all stored |")
    print("|---|---|---|---|---|")
    rates = {}
    for name in NAMES:
        runs = results[name]
        per_round = [args.count / elapsed for elapsed, _, _ in runs]
        rates[name] = statistics.median(per_round)
        cpu = statistics.median(c * 1000 / args.count for _, c, _ in runs)
        print(f"| {name} | {rates[name]:.1f} | {', '.join(f'{r:.1f}' for r in per_round)} | {cpu:.0f} | "
              f"{'yes' if all(ok for *_, ok in runs) else 'NO'} |")
    node_rates, orthanc_rates, scp_rates = ([args.count / e for e, _, _ in results[n]] for n in (NAMES[2], NAMES[1],
                                                                                               NAMES[0]))
    to_orthanc = statistics.median(a / b for a, b in zip(node_rates, orthanc_rates))
    to_scp = statistics.median(a / b for a, b in zip(node_rates, scp_rates))
    print(f"node/Orthanc = {to_orthanc:.2f} (target >= 1.5), node/storescp = {to_scp:.2f} (target >= 0.5); "
          "medians of the per-round ratios")
    return 0 if all(ok for runs in results.values() for *_, ok in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
