"""Seeded stress run of the full pipeline on phantom hands with the variations films show (not a test).

Issue 10, point 3: for each variation (a row), N phantom hands (``tests.phantom.make_hand``)
go through ``analysis.analyse_image(image, pixel_spacing_mm=...)`` and the table gives the share
measured on three bones (II-IV), the share measured on three bones that are the right ones
("3 right"), the share measured at all (``status == "ok"``), the mean |T error| and |W error|
(mm) of the measured bones against the phantom truth, the number of measured bones whose ROI
lies on another bone ("wrong": its centre is nearer another true metacarpal axis, of this hand
or of a second hand, than its own, or more than ``--tolerance-mm`` from its own axis; their
errors are in the means too), and the commonest reasons: image refusals plain, a missing bone's
own reason as ``III:low_quality``, a bone measured on another as ``II->I`` (on the thumb) or
``II->2nd:III`` (on the other hand), ``II->off`` (on no metacarpal). When both hands on a film
are complete and II-IV were all measured on the other one, that is right (the issue: "measure
the one that is complete") and scored against that hand's truth.
Target (issue 10): >= 98 % of the hands on three bones, mean |T| and |W| error <= 0.05 mm.

``--locate-only`` runs ``analysis.locate.locate_hand`` instead: the share of hands with II, III
and IV located, the share whose three located axis midpoints are all within ``--tolerance-mm``
of the true ones, the mean midpoint and length errors (mm), and the reasons (refusals, and
wrong bones named as above from the located axis midpoints).

Every hand draws its parameters (person, laterality, small rotation, the variation's own
choices) from ``numpy.random.default_rng([seed, crc32(variation), k])``: a row's hands do not
depend on which other rows run. Common to all rows: laterality L or R, rotation +-5 degrees
(unless the row sets it), 0.1 mm pixels (unless the row sets them), noise 0.01, PSF 0.1 mm.

Usage::

    python bench/stress_run.py [--n 10] [--seed 0] [--jobs 2] [--variation SUBSTR ...]
                               [--locate-only] [--tolerance-mm 4] [--out records.jsonl] [--list]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.phantom import make_hand  # noqa: E402

DEFAULT_FIELD_MM = (240.0, 180.0)
SQUARE_FIELD_MM = (260.0, 260.0)  # holds a hand rotated by any angle
LANDSCAPE_FIELD_MM = (180.0, 240.0)  # a hand lying sideways


def _borders(rng: np.random.Generator, colour: str) -> dict:
    """Collimator bands on 1-4 random sides, 8-30 mm each."""
    sides = int(rng.integers(1, 5))
    chosen = rng.permutation(4)[:sides]
    widths = [float(rng.uniform(8.0, 30.0)) if k in chosen else 0.0 for k in range(4)]
    return {"collimator": colour, "collimator_mm": tuple(widths)}


def _ulnar_sign(laterality: str) -> float:
    """Image column direction of the little-finger side (fingers up): left hands have the thumb on
    the image right, so their ulnar side is on the left."""
    return -1.0 if laterality == "L" else 1.0


def _v(**kw):
    return lambda rng, lat: dict(kw)


def _rot(angle: float, field=SQUARE_FIELD_MM):
    return lambda rng, lat: {"rotation_deg": angle, "field_mm": field}


def _mixed(rng: np.random.Generator, lat: str) -> dict:
    """Three or four variations drawn at random and combined (compatible ones only)."""
    pool = ["white", "black", "display", "rotation", "spacing", "markers", "rings", "wrist", "tissue",
            "spread", "thumb"]
    picks = set(rng.choice(pool, size=int(rng.integers(3, 5)), replace=False).tolist())
    if {"white", "black"} <= picks:
        picks.discard("black")
    kw: dict = {}
    if "white" in picks:
        kw.update(_borders(rng, "white"))
    if "black" in picks:
        kw.update(_borders(rng, "black"))
    if "display" in picks:
        kw["display"] = str(rng.choice(["linear", "log", "gamma:0.5", "gamma:1.8", "sigmoid", "equalized", "edge8"]))
    if "rotation" in picks:
        kw.update(rotation_deg=float(rng.uniform(-180.0, 180.0)), field_mm=SQUARE_FIELD_MM)
    if "spacing" in picks:
        kw["spacing_mm"] = float(rng.choice([0.08, 0.15, 0.2]))
    if "markers" in picks:
        kw.update(side_marker=lat, text_label=True)
    if "rings" in picks:
        kw["rings"] = tuple(rng.choice(["II", "III", "IV", "V"], size=int(rng.integers(1, 3)), replace=False).tolist())
    if "wrist" in picks:
        kw["wrist_metal"] = str(rng.choice(["bracelet", "watch"]))
    if "tissue" in picks:
        kw["soft_tissue_scale"] = float(rng.choice([0.3, 1.8]))
    if "spread" in picks:
        kw["finger_spread_deg"] = float(rng.uniform(-4.0, 8.0))
    if "thumb" in picks:
        kw["thumb_angle_deg"] = float(rng.uniform(15.0, 50.0))
    return kw


VARIATIONS: dict = {
    "baseline": _v(),
    "white borders": lambda rng, lat: _borders(rng, "white"),
    "white borders 4 sides": lambda rng, lat: {"collimator": "white",
                                               "collimator_mm": tuple(rng.uniform(8.0, 30.0, 4).tolist())},
    "black borders": lambda rng, lat: _borders(rng, "black"),
    "display linear": _v(display="linear"),
    "display log": _v(display="log"),
    "display gamma": lambda rng, lat: {"display": f"gamma:{rng.choice([0.4, 0.6, 1.5, 2.2])}"},
    "display sigmoid": _v(display="sigmoid"),
    "display equalized": _v(display="equalized"),
    "display edge 8-bit": _v(display="edge8"),
    "rotation +10": _rot(10.0, DEFAULT_FIELD_MM),
    "rotation -10": _rot(-10.0, DEFAULT_FIELD_MM),
    "rotation +45": _rot(45.0),
    "rotation -45": _rot(-45.0),
    "rotation 90": _rot(90.0),
    "rotation 180": _rot(180.0, DEFAULT_FIELD_MM),
    "spacing 0.05": _v(spacing_mm=0.05),
    "spacing 0.08": _v(spacing_mm=0.08),
    "spacing 0.15": _v(spacing_mm=0.15),
    "spacing 0.2": _v(spacing_mm=0.2),
    "fingers down": _v(fingers="down"),
    "fingers sideways": lambda rng, lat: {"fingers": str(rng.choice(["left", "right"])),
                                          "field_mm": LANDSCAPE_FIELD_MM},
    "markers": lambda rng, lat: {"side_marker": lat, "text_label": True},
    "rings": lambda rng, lat: {"rings": tuple(rng.choice(["II", "III", "IV", "V"], size=int(rng.integers(1, 4)),
                                                         replace=False).tolist())},
    "bracelet": _v(wrist_metal="bracelet"),
    "watch": _v(wrist_metal="watch"),
    "two hands partial": lambda rng, lat: {"second_hand_mm": _ulnar_sign(lat) * float(rng.uniform(105.0, 115.0))},
    "two hands complete": lambda rng, lat: {"second_hand_mm": _ulnar_sign(lat) * 170.0, "field_mm": (240.0, 360.0),
                                            "shift_mm": (-_ulnar_sign(lat) * 85.0, 0.0)},
    "faint tissue x0.3": _v(soft_tissue_scale=0.3),
    "strong tissue x1.8": _v(soft_tissue_scale=1.8),
    "fingers together": _v(finger_spread_deg=-4.0),
    "fingers spread": _v(finger_spread_deg=8.0),
    "thumb adducted 15": _v(thumb_angle_deg=15.0),
    "thumb abducted 50": _v(thumb_angle_deg=50.0),
    # The independent set: white borders on four sides, faint soft tissue, a side
    # letter, rotation within +-10 degrees, a non-linear display curve.
    "issue-10 films": lambda rng, lat: {"collimator": "white",
                                        "collimator_mm": tuple(rng.uniform(10.0, 25.0, 4).tolist()),
                                        "soft_tissue_scale": 0.3, "side_marker": lat,
                                        "rotation_deg": float(rng.uniform(-10.0, 10.0)), "display": "sigmoid"},
    "mixed": _mixed,
}


def hand_parameters(variation: str, seed: int, k: int) -> dict:
    """The ``make_hand`` keyword arguments of hand ``k`` of a row (deterministic)."""
    rng = np.random.default_rng([seed, zlib.crc32(variation.encode()), k])
    lat = str(rng.choice(["L", "R"]))
    kw = {"seed": int(rng.integers(0, 2**31 - 1)), "laterality": lat, "rotation_deg": float(rng.uniform(-5.0, 5.0)),
          "spacing_mm": 0.1}
    kw.update(VARIATIONS[variation](rng, lat))
    return kw


def _json_safe(kw: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}


def _axis_distance_mm(point_cr, bone, spacing: float) -> float:
    """Distance (mm) from a ``(col, row)`` pixel point to a true metacarpal axis segment."""
    p, a, b = (np.asarray(x, float) for x in (point_cr, bone.base_px, bone.head_px))
    ab = b - a
    t = float(np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0))
    return float(np.hypot(*(p - a - t * ab))) * spacing


def _which_bone(point_cr, own: str, truth, spacing: float, tol_mm: float) -> str | None:
    """None when ``point_cr`` lies on bone ``own``'s true axis (within ``tol_mm`` and nearer it than
    any other metacarpal of either hand); else what it lies on: ``I``, ``2nd:III`` or ``off``."""
    candidates = {name: b for name, b in truth.bones.items()}
    candidates.update({f"2nd:{n}": b for n, b in truth.extras.get("second_hand_bones", {}).items()})
    dist = {name: _axis_distance_mm(point_cr, b, spacing) for name, b in candidates.items()}
    nearest = min(dist, key=dist.get)
    if nearest == own and dist[own] <= tol_mm:
        return None
    return nearest if nearest != own else "off"


def _complete(bones: dict, shape: tuple[int, int]) -> bool:
    """II-IV of a hand lie wholly in the image (base and head inside)."""
    rows, cols = shape
    return all(0 <= p[0] < cols and 0 <= p[1] < rows for n in ("II", "III", "IV")
               for p in (bones[n].base_px, bones[n].head_px))


def run_one(task: tuple[str, int, int, bool, float]) -> dict:
    """Generate one hand and run the pipeline (or the finder) on it; a flat record."""
    variation, seed, k, locate_only, tol_mm = task
    kw = hand_parameters(variation, seed, k)
    rec: dict = {"variation": variation, "k": k, "params": _json_safe(kw)}
    t0 = time.perf_counter()
    image, truth = make_hand(**kw)
    sp = truth.spacing_mm
    t1 = time.perf_counter()
    rec["generate_s"] = round(t1 - t0, 3)
    try:
        if locate_only:
            from analysis.locate import locate_hand

            loc = locate_hand(image, sp)
            rec["reason"] = loc.refusal[0] if loc.refusal else None
            rec["bone_reasons"] = {n: r[0] for n, r in loc.bone_refusals.items()}
            mids, lens, wrong = {}, {}, {}
            for name in ("II", "III", "IV"):
                ax = loc.metacarpals.get(name)
                if ax is None:
                    continue
                t = truth.axis(name)
                true_mid = ((t.base_rc[0] + t.head_rc[0]) / 2, (t.base_rc[1] + t.head_rc[1]) / 2)
                mids[name] = math.hypot(ax.mid_rc[0] - true_mid[0], ax.mid_rc[1] - true_mid[1]) * sp
                lens[name] = abs(ax.length_mm - t.length_mm)
                on = _which_bone((ax.mid_rc[1], ax.mid_rc[0]), name, truth, sp, tol_mm)
                if on is not None:
                    wrong[name] = on
            rec["located"] = sorted(mids)
            rec["mid_err_mm"] = mids
            rec["len_err_mm"] = lens
            rec["wrong"] = wrong
            rec["correct"] = len(mids) == 3 and loc.refusal is None and max(mids.values()) <= tol_mm
        else:
            import analysis

            res = analysis.analyse_image(image, pixel_spacing_mm=sp)
            rec["status"] = res.status
            rec["reason"] = res.reason if res.status != "ok" else None
            measured, bone_reasons, t_err, w_err, wrong = [], {}, {}, {}, {}
            for name in ("II", "III", "IV"):
                b = res.bones.get(name)
                if b is not None and b.status == "ok" and b.cortical_thickness_mm is not None:
                    measured.append(name)
                    tb = truth.bones[name]
                    t_err[name] = abs(b.cortical_thickness_mm - tb.cortical_thickness_mm)
                    w_err[name] = abs(b.outer_width_mm - tb.outer_width_mm)
                    if b.roi_center_px is not None:
                        on = _which_bone(b.roi_center_px, name, truth, sp, tol_mm)
                        if on is not None:
                            wrong[name] = on
                elif b is not None and b.reason:
                    bone_reasons[name] = b.reason
            other = truth.extras.get("second_hand_bones")
            if (measured and other and all(wrong.get(n) == f"2nd:{n}" for n in measured)
                    and _complete(other, truth.shape)):
                # Measured the other hand, which is complete too: right, scored against its truth.
                rec["hand"] = "second"
                wrong = {}
                for name in measured:
                    b, tb = res.bones[name], other[name]
                    t_err[name] = abs(b.cortical_thickness_mm - tb.cortical_thickness_mm)
                    w_err[name] = abs(b.outer_width_mm - tb.outer_width_mm)
            rec.update(measured=measured, bone_reasons=bone_reasons, t_err_mm=t_err, w_err_mm=w_err, wrong=wrong)
    except Exception as exc:  # a crash is a result too
        rec["reason"] = f"exception:{type(exc).__name__}"
        rec["message"] = str(exc)[:200]
        rec.setdefault("measured", [])
        rec.setdefault("located", [])
    rec["run_s"] = round(time.perf_counter() - t1, 3)
    return rec


def _reasons(recs: list[dict], top: int = 3) -> str:
    c: Counter = Counter()
    for r in recs:
        if r.get("reason"):
            c[r["reason"]] += 1
        else:
            for name, why in r.get("bone_reasons", {}).items():
                c[f"{name}:{why}"] += 1
        for name, on in r.get("wrong", {}).items():
            c[f"{name}->{on}"] += 1
        if r.get("hand") == "second":
            c["(measured the other complete hand)"] += 1
    return ", ".join(f"{why} x{n}" for why, n in c.most_common(top))


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):.3f}" if values else "-"


def summarise(recs: list[dict], locate_only: bool, names: list[str]) -> str:
    lines = []
    if locate_only:
        head = (f"{'variation':24s} {'n':>3s} {'II-IV':>6s} {'right':>6s} {'|mid|mm':>8s} {'|L|mm':>7s} "
                f"{'wrong':>5s}  reasons")
    else:
        head = (f"{'variation':24s} {'n':>3s} {'3 bones':>7s} {'3 right':>7s} {'any':>5s} {'|T| mm':>7s} "
                f"{'|W| mm':>7s} {'wrong':>5s}  reasons")
    lines += [head, "-" * len(head)]

    def row(label, rs):
        n = len(rs)
        if locate_only:
            three = sum(len(r.get("located", [])) == 3 and not r.get("reason") for r in rs)
            right = sum(bool(r.get("correct")) for r in rs)
            mids = [e for r in rs for e in r.get("mid_err_mm", {}).values()]
            lens = [e for r in rs for e in r.get("len_err_mm", {}).values()]
            wrong = sum(len(r.get("wrong", {})) for r in rs)
            return (f"{label:24s} {n:3d} {100 * three / n:5.0f}% {100 * right / n:5.0f}% {_mean(mids):>8s} "
                    f"{_mean(lens):>7s} {wrong:5d}  {_reasons(rs)}")
        three = sum(len(r.get("measured", [])) == 3 for r in rs)
        right = sum(len(r.get("measured", [])) == 3 and not r.get("wrong") for r in rs)
        anyok = sum(r.get("status") == "ok" for r in rs)
        t = [e for r in rs for e in r.get("t_err_mm", {}).values()]
        w = [e for r in rs for e in r.get("w_err_mm", {}).values()]
        wrong = sum(len(r.get("wrong", {})) for r in rs)
        return (f"{label:24s} {n:3d} {100 * three / n:6.0f}% {100 * right / n:6.0f}% {100 * anyok / n:4.0f}% "
                f"{_mean(t):>7s} {_mean(w):>7s} {wrong:5d}  {_reasons(rs)}")

    for name in names:
        rs = [r for r in recs if r["variation"] == name]
        if rs:
            lines.append(row(name, rs))
    lines.append("-" * len(head))
    lines.append(row("ALL", recs))
    return "\n".join(lines)


def _progress(i: int, total: int, rec: dict) -> dict:
    """One line on stderr per hand (the table goes to stdout)."""
    if rec.get("reason"):
        what = rec["reason"]
    elif "measured" in rec and "status" in rec:
        what = f"{len(rec['measured'])} bones" + (f", wrong {rec['wrong']}" if rec.get("wrong") else "")
    else:
        what = f"located {len(rec.get('located', []))}" + (f", wrong {rec['wrong']}" if rec.get("wrong") else "")
    print(f"[{i + 1}/{total}] {rec['variation']} #{rec['k']}: {what}", file=sys.stderr, flush=True)
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10, help="hands per variation (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--variation", action="append", default=[],
                    help="run only variations whose name contains this (repeatable)")
    ap.add_argument("--locate-only", action="store_true", help="run the hand finder only")
    ap.add_argument("--tolerance-mm", type=float, default=4.0,
                    help="axis midpoint / ROI centre distance from the truth that counts as right (mm)")
    ap.add_argument("--out", type=Path, help="write one JSON record per hand here")
    ap.add_argument("--list", action="store_true", help="list the variations and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name in VARIATIONS:
            print(name)
        return 0
    names = [v for v in VARIATIONS if not args.variation or any(s.lower() in v.lower() for s in args.variation)]
    if not names:
        print(f"no variation matches {args.variation}", file=sys.stderr)
        return 2
    tasks = [(v, args.seed, k, args.locate_only, args.tolerance_mm) for v in names for k in range(args.n)]
    t0 = time.perf_counter()
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=20) as pool:
            recs = [_progress(i, len(tasks), r) for i, r in enumerate(pool.imap(run_one, tasks, chunksize=1))]
    else:
        recs = [_progress(i, len(tasks), run_one(t)) for i, t in enumerate(tasks)]
    wall = time.perf_counter() - t0
    if args.out:
        with args.out.open("w") as fh:
            for r in recs:
                fh.write(json.dumps(r) + "\n")
    mode = "locate_hand" if args.locate_only else "analyse_image"
    print(f"stress run: {mode}, {args.n} hands per variation, seed {args.seed}, "
          f"tolerance {args.tolerance_mm:g} mm")
    print(summarise(recs, args.locate_only, names))
    gen = sum(r["generate_s"] for r in recs)
    run = sum(r.get("run_s", 0.0) for r in recs)
    print(f"{len(recs)} hands in {wall:.0f} s wall ({args.jobs} job(s)); generation {gen:.0f} s, "
          f"{mode} {run:.0f} s (wall time per hand, summed over the workers)")
    if not args.locate_only:
        print("target (issue 10): >= 98 % on three bones, mean |T| and |W| error <= 0.05 mm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
