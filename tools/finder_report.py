"""How well the hand finder does on labelled real films: the table issue 10 asks for.

::

    .venv/bin/python tools/finder_report.py [--data ../shared/data/fracatlas-dev]
        [--real-hands ../shared/data/real-hands] [--jobs 2] [--only thumbs|full|real]
        [--failures FILE.jsonl]

Thumbnails (``thumbs/``, ~0.6-0.9 mm/px) go through the finder alone at 0.75 mm/px, exactly as
``dxr-node locate --pixel-spacing 0.75`` runs it; full-resolution films and ../real-hands go
through the whole analysis at 0.1 mm/px, as ``dxr-node analyze --pixel-spacing 0.1``. The
labels are those of the data set's ``labels.jsonl`` (read by eye); real-hands are labelled by
their file names. Prints per label how many were located/measured and the refusal reasons, then
the issue's acceptance figures. ``--failures`` writes one JSON line per image whose outcome
disagrees with its label, for looking at overlays by eye. The thumbnail acceptance figures carry a
95 % Wilson interval: the range another sample like this one (the held-out half) may show.

This is a report, not a test: the percentages are figures to compare before and after a change.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THUMB_SPACING_MM = 0.75
FULL_SPACING_MM = 0.1


def _locate_one(item: tuple[str, str, str]) -> dict:
    from node.research import locate_file

    file, label, ident = item
    summary, _image, _location = locate_file(Path(file), THUMB_SPACING_MM)
    return {"id": ident, "label": label, **summary}


def _analyse_one(item: tuple[str, str, str]) -> dict:
    import analysis
    from node.research import _read_picture

    file, label, ident = item
    try:
        r = analysis.analyse_image(_read_picture(Path(file)), pixel_spacing_mm=FULL_SPACING_MM, pixel_spacing_source="cli")
        return {"id": ident, "label": label, "file": file, "status": r.status, "reason": r.reason,
                "bones_measured": r.bones_measured, "rois": {n: list(b.roi_center_px) for n, b in r.bones.items()
                                                             if b.roi_center_px is not None}}
    except Exception as exc:
        return {"id": ident, "label": label, "file": file, "status": "error", "reason": type(exc).__name__,
                "message": str(exc)}


def _real_hand_label(name: str) -> str:
    if "_adult_" in name:
        return "PA_ADULT"
    if "_child_" in name:
        return "PA_CHILD"
    if "lateral" in name:
        return "LATERAL"
    if "oblique" in name:
        return "OBLIQUE"
    return "NEG"


def _share(n: int, d: int) -> str:
    return f"{n}/{d} = {100.0 * n / d:5.1f} %" if d else "-"


def _wilson(n: int, d: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval (per cent) of the share n/d: what another sample of the same
    kind (the held-out half of FracAtlas) may show."""
    if not d:
        return (0.0, 100.0)
    p = n / d
    centre = (p + z * z / (2 * d)) / (1 + z * z / d)
    half = z * math.sqrt(p * (1 - p) / d + z * z / (4 * d * d)) / (1 + z * z / d)
    return (100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half))


def _share_ci(n: int, d: int) -> str:
    lo, hi = _wilson(n, d)
    return f"{_share(n, d)} (95 % CI {lo:4.1f}-{hi:4.1f})" if d else "-"


def _table(rows: list[dict], ok_status: str) -> list[str]:
    by_label: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_label[r["label"]].append(r)
    lines = []
    for label in sorted(by_label):
        group = by_label[label]
        ok = sum(1 for r in group if r["status"] == ok_status)
        reasons = Counter(r.get("reason") or r["status"] for r in group if r["status"] != ok_status)
        top = ", ".join(f"{k} {v}" for k, v in reasons.most_common(5))
        lines.append(f"  {label:<11} n={len(group):<4} {ok_status} {_share(ok, len(group)):<18} refused: {top}")
    return lines


def _thumb_figures(rows: list[dict]) -> list[str]:
    def share(label, pred):
        group = [r for r in rows if r["label"] == label]
        return _share_ci(sum(1 for r in group if pred(r)), len(group))

    not_pa = [r for r in rows if r["label"] in ("LATERAL", "OBLIQUE", "NOT_HAND")]
    return [
        f"  PA_ADULT located                 {share('PA_ADULT', lambda r: r['status'] == 'located')}   (target >= 90 %)",
        f"  LATERAL/OBLIQUE/NOT_HAND as PA   {_share_ci(sum(1 for r in not_pa if r['status'] == 'located'), len(not_pa))}"
        "   (target <= 2 %)",
        f"  PA_ADULT called immature         {share('PA_ADULT', lambda r: r.get('maturity') == 'immature' or r.get('reason') == 'immature_skeleton')}"
        "   (target <= 2 %)",
        f"  PA_CHILD refused immature        {share('PA_CHILD', lambda r: r.get('reason') == 'immature_skeleton')}"
        "   (target >= 70 %)",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "fracatlas-dev"))
    ap.add_argument("--real-hands", default=str(ROOT.parent / "shared" / "data" / "real-hands"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", choices=("thumbs", "full", "real"), action="append")
    ap.add_argument("--failures", help="write the images whose outcome disagrees with the label here (JSONL)")
    args = ap.parse_args(argv)
    data, real = Path(args.data), Path(args.real_hands)
    parts = set(args.only or ("thumbs", "full", "real"))
    if not (data / "labels.jsonl").is_file():
        print(f"finder_report: no labels.jsonl in {data}", file=sys.stderr)
        return 2
    labels = [json.loads(line) for line in (data / "labels.jsonl").read_text().splitlines() if line.strip()]
    thumbs = [(str(data / x["file"]), x["label"], x["id"]) for x in labels if x["file"].startswith("thumbs/")]
    full = [(str(data / x["file"]), x["label"], x["id"]) for x in labels if x["file"].startswith("full/")]
    reals = [(str(p), _real_hand_label(p.name), p.stem) for p in sorted(real.glob("*.jpg"))] if real.is_dir() else []
    failures = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        if "thumbs" in parts:
            rows = list(pool.map(_locate_one, thumbs, chunksize=8))
            print(f"thumbnails, finder alone at {THUMB_SPACING_MM} mm/px ({len(rows)} films)")
            print("\n".join(_table(rows, "located")))
            print("\n".join(_thumb_figures(rows)))
            failures += [r for r in rows if (r["status"] == "located") != (r["label"] == "PA_ADULT")
                         or (r["label"] == "PA_CHILD" and r.get("reason") != "immature_skeleton")]
        for name, items in (("full", full), ("real", reals)):
            if name not in parts or not items:
                continue
            rows = list(pool.map(_analyse_one, items, chunksize=1))
            print(f"{name}-resolution films, whole analysis at {FULL_SPACING_MM} mm/px ({len(rows)} films)")
            print("\n".join(_table(rows, "ok")))
            adults = [r for r in rows if r["label"] == "PA_ADULT"]
            print(f"  PA_ADULT measured on three bones {_share(sum(1 for r in adults if r.get('bones_measured') == 3), len(adults))}"
                  f"   measured {_share(sum(1 for r in adults if r['status'] == 'ok'), len(adults))}")
            failures += [r for r in rows if (r["status"] == "ok") != (r["label"] == "PA_ADULT")
                         or (r["label"] == "PA_ADULT" and r.get("bones_measured") != 3)]
    if args.failures:
        Path(args.failures).write_text("".join(json.dumps(r) + "\n" for r in failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
