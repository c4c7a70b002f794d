"""Time ``node.report.build_study_outputs`` for one full-size PA hand (SR only, SR + SC, SR + SC + PDF,
SR + PDF), and the HL7 ORU^R01 built from that SR (with the PDF as ED).

    .venv/bin/python bench/outputs_timing.py

Prints the median of five runs after one warm-up; the result comes from the phantom's geometry
so the figure does not depend on the engine.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.report import OutputOptions, build_study_outputs  # noqa: E402
from tests.node.outputs_inputs import result_from_truth  # noqa: E402
from tests.phantom import make_dataset, make_hand  # noqa: E402


def main() -> None:
    image, truth = make_hand(seed=0, spacing_mm=0.1)
    ds = make_dataset(image, truth)
    result = result_from_truth(truth)
    print(f"input {ds.Rows} x {ds.Columns} px")
    cases = (("SR only", OutputOptions(picture=False)), ("SR + SC", OutputOptions()),
             ("SR + SC + PDF", OutputOptions(pdf=True)), ("SR + PDF", OutputOptions(picture=False, pdf=True)))
    for label, options in cases:
        build_study_outputs([(ds, result)], uid_seed="warm-up", options=options)
        times = []
        for k in range(5):
            start = time.perf_counter()
            build_study_outputs([(ds, result)], uid_seed=f"bench/{k}", options=options)
            times.append(time.perf_counter() - start)
        print(f"{label}: median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")
    _oru_timing(ds, result)


def _oru_timing(ds, result) -> None:
    """The ORU of the SR with the PDF embedded: build time and size."""
    from node.export.config import DestinationConfig
    from node.export.oru import build_oru

    sr, pdf = build_study_outputs([(ds, result)], uid_seed="oru", options=OutputOptions(picture=False, pdf=True))
    document = bytes(pdf.EncapsulatedDocument[:pdf.EncapsulatedDocumentLength])
    dest = DestinationConfig(name="ris", type="hl7", host="127.0.0.1", port=2575)
    times = []
    for k in range(5):
        start = time.perf_counter()
        oru = build_oru(sr, dest, f"B{k}", pdf=document)
        times.append(time.perf_counter() - start)
    print(f"ORU^R01 with PDF as ED: median {statistics.median(times) * 1000:.0f} ms, "
          f"{len(oru.message.encode()) / 1024:.0f} KiB (PDF {len(document) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
