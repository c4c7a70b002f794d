"""Receive rate of the node's Storage SCP: N x ~10 MB CR instances over one association.

Starts ``dxr-node serve`` (fsync on, as shipped) on a free loopback port with a throw-away
data_dir, sends the instances with a pynetdicom SCU (or DCMTK ``storescu`` with
``--sender storescu``), and prints instances/s and MB/s measured at the sender, from the
first C-STORE request to the last response (every response means "fsynced and in SQLite").

    .venv/bin/python bench/receive_rate.py                 # 200 x 10 MB, pynetdicom sender
    .venv/bin/python bench/receive_rate.py --sender storescu --count 100
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

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from _node import free_port, start_node, stop_node, wait_for_scp  # bench/_node.py

CR = "1.2.840.10008.5.1.4.1.1.1"


def cr_dataset(study_uid: str, rows: int, columns: int) -> Dataset:
    ds = Dataset()
    sop = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CR
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CR, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.PatientID, ds.PatientName = "BENCH", "Bench^Patient"
    ds.Modality, ds.BodyPartExamined = "CR", "HAND"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.PixelData = np.random.default_rng(0).integers(0, 4096, (rows, columns), dtype=np.uint16).tobytes()
    return ds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--rows", type=int, default=2560)
    p.add_argument("--columns", type=int, default=2048, help="2560 x 2048 x 16 bit = 10.5 MB")
    p.add_argument("--sender", choices=("pynetdicom", "storescu"), default="pynetdicom")
    p.add_argument("--keep", action="store_true", help="keep the temporary data_dir")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dxr-bench-", dir=os.environ.get("BENCH_TMP")))
    port = free_port()
    node = start_node(
        work,
        f'[node]\nae_title = "DXRNODE"\nbind = "127.0.0.1"\nport = {port}\ndata_dir = "var"\nworkers = 1\n'
        # A long quiet period keeps analysis out of the measurement: this measures receiving only.
        '[study]\nquiet_period_seconds = 3600\n[[sources]]\nae_title = "BENCH"\n'
        '[[destinations]]\nname = "outbox"\ntype = "folder"\n[disk]\nmin_free_bytes = 0\n',
    )
    try:
        ae = AE(ae_title="BENCH")
        ae.maximum_pdu_size = 0
        ae.add_requested_context(CR, ExplicitVRLittleEndian)
        wait_for_scp(ae, port, "DXRNODE", work)

        study = generate_uid()
        template = cr_dataset(study, args.rows, args.columns)
        size_mb = len(template.PixelData) / 1e6
        if args.sender == "pynetdicom":
            assoc = ae.associate("127.0.0.1", port, ae_title="DXRNODE")
            statuses = []
            start = time.perf_counter()
            for _ in range(args.count):
                template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                statuses.append(assoc.send_c_store(template).Status)
            elapsed = time.perf_counter() - start
            assoc.release()
            ok = sum(1 for s in statuses if s == 0)
        else:
            files = work / "in"
            files.mkdir()
            for i in range(args.count):
                template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                template.save_as(files / f"{i:04d}.dcm", enforce_file_format=True)
            start = time.perf_counter()
            proc = subprocess.run(["storescu", "-aet", "BENCH", "-aec", "DXRNODE", "-pdu", "131072",
                                   "127.0.0.1", str(port), *sorted(map(str, files.iterdir()))],
                                  capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            ok = args.count if proc.returncode == 0 else 0
        print(f"sender={args.sender} instances={args.count} ok={ok} size_mb={size_mb:.1f} fsync=on "
              f"seconds={elapsed:.2f} instances_per_s={ok / elapsed:.2f} mb_per_s={ok * size_mb / elapsed:.1f}")
        return 0 if ok == args.count else 1
    finally:
        stop_node(node)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
