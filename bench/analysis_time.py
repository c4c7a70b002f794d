"""Per-image analysis time on one core for a 2500 x 3000 phantom hand radiograph.

Usage::

    .venv/bin/python bench/analysis_time.py [--repeats 10] [--json]

Reports, single-threaded (NUMBA_NUM_THREADS=1 and one BLAS thread):

* warm: ``analysis.analyse(dataset)`` in a process that has already analysed one image
  (median of ``--repeats``), split into decode+calibration, ``locate_hand`` and the
  measurement of II-IV (``measure_bone`` x3 on the same axes);
* cold: the first ``analysis.analyse`` in a fresh process, including ``import analysis`` and
  loading the numba kernels from the on-disk cache (the cache is populated first).

The machine may be shared: the 1-minute load average before and after is printed, and the
warm ``analyse`` is also given in CPU time of this process (less sensitive to other jobs than
wall time, though memory-bandwidth contention still shows).

Targets (issue 3): <= 150 ms warm, <= 2 s cold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SINGLE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
os.environ.update(SINGLE_THREAD)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPE = (3000, 2500)  # rows, columns
SPACING_MM = 0.1

_COLD = """
import time, sys
t0 = time.perf_counter()
import pydicom
import analysis
ds = pydicom.dcmread(sys.argv[1])
t1 = time.perf_counter()
r = analysis.analyse(ds)
t2 = time.perf_counter()
print(f"{t2 - t0:.4f} {t2 - t1:.4f} {r.status} {r.reason}")
"""


def _make_input(path: Path) -> None:
    from tests.phantom import make_dataset, make_hand

    image, truth = make_hand(3, spacing_mm=SPACING_MM, shape_px=SHAPE, rotation_deg=8.0)
    make_dataset(image, truth, bits_stored=12, photometric="MONOCHROME1").save_as(path, enforce_file_format=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import pydicom

    import analysis
    from analysis.calibration import image_from_dataset
    from analysis.locate import locate_hand
    from analysis.measure import measure_bone
    from tests.phantom import make_hand, truth_location

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hand.dcm"
        _make_input(path)
        ds = pydicom.dcmread(path)
        _, truth = make_hand(3, spacing_mm=SPACING_MM, shape_px=SHAPE, rotation_deg=8.0, noise=0.0)
        known = truth_location(truth)

        first = analysis.analyse(ds)  # compiles or loads the kernels
        timings: dict[str, list[float]] = {"analyse": [], "calibrate": [], "locate": [], "measure": []}
        cpu: list[float] = []
        load_before = os.getloadavg()[0]
        for _ in range(args.repeats):
            c0 = time.process_time()
            t0 = time.perf_counter()
            analysis.analyse(ds)
            t1 = time.perf_counter()
            cpu.append(time.process_time() - c0)
            cal = image_from_dataset(ds)
            t2 = time.perf_counter()
            locate_hand(cal.image, cal.pixel_spacing_mm)
            t3 = time.perf_counter()
            for name in ("II", "III", "IV"):
                measure_bone(cal.image, known.metacarpals[name], cal.pixel_spacing_mm, name)
            t4 = time.perf_counter()
            for key, dt in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                timings[key].append(dt)

        env = {**os.environ, **SINGLE_THREAD, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-c", _COLD, str(path)], env=env, check=True, capture_output=True)  # cache
        cold = []
        for _ in range(3):
            out = subprocess.run([sys.executable, "-c", _COLD, str(path)], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            cold.append((float(out[0]), float(out[1])))

    report = {
        "image_px": list(SHAPE),
        "pixel_spacing_mm": SPACING_MM,
        "threads": 1,
        "status_of_full_analysis": f"{first.status}/{first.reason}",
        "warm_ms": {k: round(1000 * statistics.median(v), 1) for k, v in timings.items()},
        "warm_cpu_ms_analyse": round(1000 * statistics.median(cpu), 1),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cold_first_call_s": round(statistics.median(c[1] for c in cold), 3),
        "cold_including_imports_s": round(statistics.median(c[0] for c in cold), 3),
        "targets": {"warm_ms": 150, "cold_s": 2.0},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        w = report["warm_ms"]
        print(f"image {SHAPE[1]} x {SHAPE[0]} px at {SPACING_MM} mm, 1 thread; full analysis -> {report['status_of_full_analysis']}")
        print(f"warm analyse(ds): {w['analyse']:.1f} ms  (calibrate {w['calibrate']:.1f}, locate {w['locate']:.1f}, "
              f"measure II-IV {w['measure']:.1f})   target <= 150 ms")
        print(f"warm analyse(ds) CPU time: {report['warm_cpu_ms_analyse']:.1f} ms; 1-min load average "
              f"{report['load_average_1min'][0]} -> {report['load_average_1min'][1]} (2 cores shared)")
        print(f"cold first analyse(ds) in a fresh process: {report['cold_first_call_s']:.3f} s "
              f"({report['cold_including_imports_s']:.3f} s with imports)   target <= 2 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
