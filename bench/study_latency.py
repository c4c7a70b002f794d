"""Node latency: last instance acknowledged -> result SR written by the folder destination.

Starts ``dxr-node serve`` (folder destination, ``--quiet`` seconds quiet period, 1 worker),
sends ``--studies`` one-image phantom PA hand studies (tests/phantom.py, full size) one after
another, and for each prints the seconds from the last C-STORE response to the SR file in
``<data_dir>/outbox/<StudyInstanceUID>/``, and that time minus the quiet period (= assembly
poll + analysis + SR/SC building + export). The first study includes the worker's imports and
numba's cache load.

    .venv/bin/python bench/study_latency.py --studies 3 --quiet 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from pynetdicom import AE

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _node import free_port, start_node, stop_node, wait_for_scp  # noqa: E402  (bench/_node.py)
from tests.phantom import make_dataset  # noqa: E402  (test phantom: a realistic PA hand)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=3)
    p.add_argument("--quiet", type=float, default=2.0, help="quiet period, seconds")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dxr-latency-"))
    port = free_port()
    node = start_node(
        work,
        f'[node]\nae_title = "DXRNODE"\nbind = "127.0.0.1"\nport = {port}\ndata_dir = "var"\nworkers = 1\n'
        f'[study]\nquiet_period_seconds = {args.quiet}\n[[sources]]\nae_title = "BENCH"\n'
        f'[[destinations]]\nname = "outbox"\ntype = "folder"\n[reference]\ndir = "{REPO / "config" / "reference"}"\n',
    )
    try:
        ae = AE(ae_title="BENCH")
        ae.maximum_pdu_size = 0
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.1")
        wait_for_scp(ae, port, "DXRNODE", work)
        latencies = []
        for i in range(args.studies):
            ds = make_dataset(seed=i, study_uid=generate_uid())
            assoc = ae.associate("127.0.0.1", port, ae_title="DXRNODE")
            status = assoc.send_c_store(ds)
            acked = time.monotonic()
            assoc.release()
            if status.Status != 0:
                raise SystemExit(f"C-STORE status 0x{status.Status:04X}")
            outbox = work / "var" / "outbox" / ds.StudyInstanceUID
            sr = None
            while sr is None and time.monotonic() - acked < 120:
                for f in outbox.glob("*.dcm") if outbox.exists() else ():
                    if pydicom.dcmread(f, stop_before_pixels=True).Modality == "SR":
                        sr = f
                time.sleep(0.02)
            if sr is None:
                raise SystemExit(f"no SR after 120 s; see {work / 'node.log'}")
            seconds = time.monotonic() - acked
            latencies.append(seconds)
            print(f"study={i + 1} rows x cols={ds.Rows}x{ds.Columns} seconds={seconds:.2f} "
                  f"minus_quiet_period={seconds - args.quiet:.2f}")
        warm = latencies[1:] or latencies
        print(f"quiet_period_seconds={args.quiet:g} first={latencies[0]:.2f} "
              f"warm_median={statistics.median(warm):.2f} warm_median_minus_quiet={statistics.median(warm) - args.quiet:.2f}")
        statuses = [line.split("status=")[1].split()[0]
                    for line in (work / "node.log").read_text().splitlines() if "event=image_analysed" in line]
        print(f"analysis statuses: {', '.join(statuses)}")
        shutil.rmtree(work, ignore_errors=True)  # kept when something failed, for its node.log
        return 0
    finally:
        stop_node(node)


if __name__ == "__main__":
    sys.exit(main())
