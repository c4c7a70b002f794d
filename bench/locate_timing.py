"""Time analysis.locate.locate_hand on the real hands and on a 2500 x 3000 phantom (not a test).

Usage: ``python bench/locate_timing.py [REAL_HANDS_DIR]`` (default ../shared/data/real-hands).
Prints seconds per image (best of 3 after one warm-up) on this machine, one core.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.locate import locate_hand  # noqa: E402


def best_of(fn, n=3):
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "real-hands"
    rows = []
    if folder.is_dir():
        from PIL import Image

        for path in sorted(folder.glob("*.jpg")):
            with Image.open(path) as im:
                image = np.asarray(im.convert("L"), dtype=np.float64)
            seconds = best_of(lambda: locate_hand(image, 0.1))
            loc = locate_hand(image, 0.1)
            rows.append((path.name, image.shape, seconds, loc.refusal[0] if loc.refusal else "PA"))
    from tests.phantom import make_hand

    image, _ = make_hand(seed=0, spacing_mm=0.08, field_mm=(240.0, 200.0))
    rows.append(("phantom 0.08 mm", image.shape, best_of(lambda: locate_hand(image, 0.08)), "PA"))
    for name, shape, seconds, outcome in rows:
        print(f"{name:52s} {shape[1]:5d}x{shape[0]:<5d} {seconds:6.3f} s  {outcome}")
    print(f"median {np.median([r[2] for r in rows]):.3f} s, max {max(r[2] for r in rows):.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
