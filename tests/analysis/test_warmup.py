"""analysis.warm_up loads every kernel signature the analysis of a hand uses.

Checked in a fresh interpreter (numba's loaded signatures are per process, and other tests in
this one have loaded them already): after ``warm_up()``, analysing phantom hands of several
kinds (MONOCHROME1/2, rotated, edge-enhanced, signed pixels) adds no signature to any kernel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
import numba
from analysis import image_kernels, kernels
from analysis.warmup import warm_up
import analysis
from tests.phantom import make_dataset

def loaded():
    return {f"{m.__name__}.{k}": sorted(str(s) for s in v.signatures)
            for m in (kernels, image_kernels) for k, v in vars(m).items()
            if isinstance(v, numba.core.registry.CPUDispatcher)}

warm_up()
after_warm_up = loaded()
statuses = []
for kw in (dict(seed=0), dict(seed=1, rotation_deg=12.0, photometric="MONOCHROME1"),
           dict(seed=2, laterality="R", unsharp=(1.0, 1.5), spacing_mm=0.15),
           dict(seed=3, rescale=(1.0, -1024.0))):
    ds = make_dataset(**kw)
    if "rescale" in kw:  # signed stored values: PixelRepresentation 1
        import numpy as np
        a = ds.pixel_array.astype(np.int16) - 2048
        ds.PixelRepresentation = 1
        ds.PixelData = a.tobytes()
    statuses.append(analysis.analyse(ds).status)
after_analysis = loaded()
new = {k: sorted(set(after_analysis[k]) - set(after_warm_up[k])) for k in after_analysis}
print(json.dumps({"statuses": statuses, "new": {k: v for k, v in new.items() if v},
                  "warmed": sum(len(v) for v in after_warm_up.values())}))
"""


def test_warm_up_loads_every_signature_the_analysis_uses():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["statuses"].count("ok") >= 3, report  # the kernels were really exercised
    assert report["new"] == {}, f"signatures loaded only by the analysis, not by warm_up: {report['new']}"
    assert report["warmed"] >= 12
