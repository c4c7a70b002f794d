"""Node latency: last instance acknowledged -> result SR stored at the destination, per stage.

Starts ``dxr-node serve`` (``--quiet`` seconds quiet period, 1 worker) with a folder destination
or (``--orthanc``) a throw-away Orthanc as DIMSE destination, sends ``--studies`` one-image
phantom PA hand studies (tests/phantom.py, full size) one after another, and for each prints
the seconds from the last C-STORE response to the SR file in ``<data_dir>/outbox/<Study>/``
(or to the SR found in Orthanc), that time minus the quiet period (= the issue's "study
complete -> SR stored"), and the stages from the node's log: ``wait`` (study complete -> job
started), ``analyse`` (read + decode + analysis), ``build`` (SR + SC + writing them), ``export``
(job done -> SR sent), and ``job_cpu`` (the worker's CPU seconds for the job, both threads:
the figure the machine's load does not change). The first study is sent as soon as the node answers: its worker may
still be warming up (``event=worker_warmed``), which then counts in its latency; with
``--after-warm-up`` it is sent once the worker is warm.

    .venv/bin/python bench/study_latency.py --studies 6 --quiet 2 [--orthanc]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from pynetdicom import AE

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _node import free_port, start_node, stop_node, wait_for_scp  # noqa: E402  (bench/_node.py)
from tests.phantom import make_dataset  # noqa: E402  (test phantom: a realistic PA hand)

STAGES = (("wait", "study_complete", "job_started"), ("analyse", "job_started", "image_analysed"),
          ("build", "image_analysed", "job_done"), ("export", "job_done", "export_sent"))


def _config(port: int, quiet: float, destination: str) -> str:
    return (f'[node]\nae_title = "DXRNODE"\nbind = "127.0.0.1"\nport = {port}\ndata_dir = "var"\nworkers = 1\n'
            f'[study]\nquiet_period_seconds = {quiet}\n[[sources]]\nae_title = "BENCH"\n{destination}'
            f'[reference]\ndir = "{REPO / "config" / "reference"}"\ntable = "black2001"\n')


def _sr_in_folder(work: Path, study_uid: str) -> bool:
    outbox = work / "var" / "outbox" / study_uid
    return outbox.exists() and any(pydicom.dcmread(f, stop_before_pixels=True).Modality == "SR"
                                   for f in outbox.glob("*.dcm"))


def _sr_in_orthanc(url: str, study_uid: str) -> bool:
    query = json.dumps({"Level": "Instance", "Query": {"StudyInstanceUID": study_uid, "Modality": "SR"}}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{url}/tools/find", data=query), timeout=10) as answer:
        return bool(json.load(answer))


def _stages(log_text: str, study_uid: str) -> dict[str, float]:
    """Seconds per stage for one study, from the first log line of each event naming it."""
    seen: dict[str, float] = {}
    for line in log_text.splitlines():
        if f"study={study_uid}" not in line or "event=" not in line:
            continue
        event = line.split("event=")[1].split()[0]
        if event not in seen:
            seen[event] = dt.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
    return {name: seen[b] - seen[a] for name, a, b in STAGES if a in seen and b in seen}


def _run(work: Path, port: int, args: argparse.Namespace, has_sr) -> list[tuple[float, dict]]:
    ae = AE(ae_title="BENCH")
    ae.maximum_pdu_size = 0
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.1")
    wait_for_scp(ae, port, "DXRNODE", work)
    while args.after_warm_up and "event=worker_warmed" not in (work / "node.log").read_text():
        time.sleep(0.05)
    rows = []
    for i in range(args.studies):
        ds = make_dataset(seed=i, study_uid=generate_uid())
        assoc = ae.associate("127.0.0.1", port, ae_title="DXRNODE")
        status = assoc.send_c_store(ds)
        acked = time.monotonic()
        assoc.release()
        if status.Status != 0:
            raise SystemExit(f"C-STORE status 0x{status.Status:04X}")
        while not has_sr(ds.StudyInstanceUID):
            if time.monotonic() - acked > 120:
                raise SystemExit(f"no SR after 120 s; see {work / 'node.log'}")
            time.sleep(0.01)
        seconds = time.monotonic() - acked
        time.sleep(0.2)  # the log lines of this study are written
        log = (work / "node.log").read_text()
        stages = _stages(log, ds.StudyInstanceUID)
        done = [line for line in log.splitlines() if "event=job_done" in line and ds.StudyInstanceUID in line]
        if done and "cpu_seconds=" in done[0]:
            stages["job_cpu"] = float(done[0].split("cpu_seconds=")[1].split()[0])
        rows.append((seconds, stages))
        print(f"study={i + 1} seconds={seconds:.2f} minus_quiet_period={seconds - args.quiet:.2f} "
              + " ".join(f"{k}={v:.2f}" for k, v in stages.items()), flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=6)
    p.add_argument("--quiet", type=float, default=2.0, help="quiet period, seconds")
    p.add_argument("--orthanc", action="store_true", help="DIMSE destination: a throw-away Orthanc")
    p.add_argument("--after-warm-up", action="store_true",
                   help="send the first study once the worker has logged event=worker_warmed")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dxr-latency-"))
    port = free_port()
    orthanc = None
    if args.orthanc:
        from tests.integration.servers import OrthancServer

        orthanc = OrthancServer(work / "orthanc", node_aet=None).start()
        destination = (f'[[destinations]]\nname = "orthanc"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\n'
                       f'port = {orthanc.dicom_port}\n')
        has_sr = lambda uid: _sr_in_orthanc(orthanc.url, uid)  # noqa: E731
    else:
        destination = '[[destinations]]\nname = "outbox"\ntype = "folder"\n'
        has_sr = lambda uid: _sr_in_folder(work, uid)  # noqa: E731
    node = start_node(work, _config(port, args.quiet, destination))
    try:
        rows = _run(work, port, args, has_sr)
    finally:
        stop_node(node)
        if orthanc is not None:
            orthanc.stop()
    first, warm = rows[0][0] - args.quiet, [s - args.quiet for s, _ in rows[1:]] or [rows[0][0] - args.quiet]
    names = [name for name, _, _ in STAGES] + ["job_cpu"]
    stage_medians = {name: statistics.median(st[name] for _, st in rows[1:] or rows if name in st) for name in names
                     if any(name in st for _, st in rows)}
    print(f"destination={'orthanc' if args.orthanc else 'folder'} quiet_period_seconds={args.quiet:g} "
          f"first_minus_quiet={first:.2f} warm_median_minus_quiet={statistics.median(warm):.2f} "
          f"warm_max_minus_quiet={max(warm):.2f} load_average={os.getloadavg()[0]:.1f}")
    print("warm stage medians: " + " ".join(f"{k}={v:.2f}" for k, v in stage_medians.items()))
    log = (work / "node.log").read_text()
    print("analysis statuses: " + ", ".join(line.split("status=")[1].split()[0]
                                             for line in log.splitlines() if "event=image_analysed" in line))
    warmed = [line.split("seconds=")[1].split()[0] for line in log.splitlines() if "event=worker_warmed" in line]
    print(f"worker warm-up seconds: {', '.join(warmed) or 'none logged'}")
    shutil.rmtree(work, ignore_errors=True)  # kept when something failed, for its node.log
    return 0


if __name__ == "__main__":
    sys.exit(main())
