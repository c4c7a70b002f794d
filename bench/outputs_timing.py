"""Time ``node.report.build_study_outputs`` for one full-size PA hand (SR only, SR + SC).

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
    for label, options in (("SR only", OutputOptions(picture=False)), ("SR + SC", OutputOptions())):
        build_study_outputs([(ds, result)], uid_seed="warm-up", options=options)
        times = []
        for k in range(5):
            start = time.perf_counter()
            build_study_outputs([(ds, result)], uid_seed=f"bench/{k}", options=options)
            times.append(time.perf_counter() - start)
        print(f"{label}: median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
