"""``dxr-node request`` and the trend's priors against a real Orthanc, timed.

Starts an Orthanc (no routing) and a node that lists it as ``[[pacs]]`` and destination, stores
``--studies`` full-size phantom hand studies of one patient in Orthanc and requests each by
accession (C-FIND + C-MOVE), printing the CLI's wall time (Python start included) per request;
then times :func:`node.retrieve.priors.pacs_history` (C-FIND + C-GET of every earlier DXR SR of
the patient) for a later study of the same patient, as a worker does before building outputs.

    .venv/bin/python bench/request_priors.py --studies 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from node.config import load_config  # noqa: E402
from node.retrieve.priors import pacs_history  # noqa: E402
from tests import dicom_samples  # noqa: E402
from tests.integration.servers import HOST, NodeProcess, OrthancServer  # noqa: E402
from tests.phantom import make_dataset, make_hand  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="pacs_history calls timed")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dxr-bench-request-"))
    orthanc = OrthancServer(tmp / "orthanc", aet="ARCHIVE", node_aet=None).start()
    node = NodeProcess(tmp / "node", sources=[], destinations=[orthanc.as_destination("pacs")],
                       extra={"pacs": [{"name": "archive", "ae_title": "ARCHIVE", "host": HOST,
                                        "port": orthanc.dicom_port}]})
    try:
        node.start()
        orthanc.set_modality("dxrnode", node.ae_title, node.port)
        image, truth = make_hand(seed=0, laterality="L")
        studies, times = [], []
        for k in range(args.studies):
            ds = make_dataset(image, truth, study_uid=generate_uid(), series_uid=generate_uid(), patient_id="BENCH1",
                              accession=f"B{k}", study_date=f"2020{k + 1:02d}01")
            ds.Manufacturer = "Phantom Modality Co"
            path = dicom_samples.save(ds, tmp / f"{k}.dcm")
            orthanc.upload(path)
            studies.append(ds)
            started = time.monotonic()
            result = node.cli("request", "--accession", f"B{k}")
            times.append(time.monotonic() - started)
            if not result.ok:
                raise SystemExit(str(result))
            orthanc.wait_for_srs(str(ds.StudyInstanceUID))
        print(f"study file {path.stat().st_size / 1e6:.1f} MB; dxr-node request wall s: "
              + ", ".join(f"{t:.2f}" for t in times) + f" (median {statistics.median(times):.2f})")
        config = load_config(node.config_path)
        later = studies[-1].copy()
        later.StudyInstanceUID = generate_uid()
        timings = []
        for _ in range(args.repeats):
            started = time.monotonic()
            points = pacs_history(config, later)
            timings.append(time.monotonic() - started)
        print(f"pacs_history: {len(points)} earlier results; s: " + ", ".join(f"{t:.3f}" for t in timings)
              + f" (median {statistics.median(timings):.3f})")
    finally:
        node.stop()
        orthanc.stop()


if __name__ == "__main__":
    main()
