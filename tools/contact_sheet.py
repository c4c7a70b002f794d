"""Contact sheet of review overlays for every image in a folder (``make overlays``).

Two ways in:

* ``python tools/contact_sheet.py --tiles DIR --results JSONL [--out PNG]``: tile the overlay
  PNGs that ``dxr-node analyze --overlay-dir DIR`` wrote, captioned from its JSON Lines output
  (what ``make overlays`` does: the same code path as the research CLI).
* ``python tools/contact_sheet.py [--pixel-spacing MM] [--out PNG] FOLDER``: analyse every image
  in FOLDER here (``analysis.analyse_image``, or location plus ``measure_bone`` without it) and
  draw the overlays with ``node.report.overlay.draw_overlay``.

Images: PNG/JPEG (greyscale, bone bright) and DICOM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from analysis.result import BONE_NAMES, AnalysisResult, BoneResult, refused  # noqa: E402
from node.report.overlay import draw_overlay, load_font  # noqa: E402


def load_image(path: Path) -> np.ndarray:
    """Greyscale pixels, bone bright, float64."""
    if path.suffix.lower() in (".dcm", ".dicom", ""):
        from analysis.calibration import image_from_dataset
        import pydicom

        return image_from_dataset(pydicom.dcmread(path)).image
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.float64)


def analyse_file(image: np.ndarray, spacing_mm: float) -> AnalysisResult:
    try:
        from analysis import analyse_image
    except ImportError:
        analyse_image = None
    if analyse_image is not None:
        return analyse_image(image, pixel_spacing_mm=spacing_mm, pixel_spacing_source="cli")
    return locate_and_measure(image, spacing_mm)


def locate_and_measure(image: np.ndarray, spacing_mm: float) -> AnalysisResult:
    """Location plus per-bone measurement, without the indices (fallback)."""
    from analysis.locate import locate_hand

    loc = locate_hand(image, spacing_mm)
    common = dict(
        view=loc.view, pixel_spacing_mm=spacing_mm, pixel_spacing_source="cli", image_shape=image.shape,
        hand_outline_px=[(float(c), float(r)) for r, c in loc.outline_rc],
        metacarpal_axes_px={n: a.axis_px() for n, a in loc.metacarpals.items()},
    )
    if loc.refusal is not None:
        return refused(loc.refusal[0], loc.refusal[1], **common)
    bones: dict[str, BoneResult] = {}
    try:
        from analysis.measure import measure_bone
    except ImportError:
        measure_bone = None
    for name in BONE_NAMES:
        axis = loc.metacarpals[name]
        if name in loc.bone_refusals:
            reason, message = loc.bone_refusals[name]
            bones[name] = BoneResult(name, status="refused", reason=reason, message=message,
                                     roi_center_px=(axis.mid_rc[1], axis.mid_rc[0]), axis_px=axis.axis_px())
        elif measure_bone is not None:
            bones[name] = measure_bone(image, axis, spacing_mm, name)
        else:
            bones[name] = BoneResult(name, roi_center_px=(axis.mid_rc[1], axis.mid_rc[0]), axis_px=axis.axis_px())
    ok = [b for b in bones.values() if b.status == "ok" and b.mci is not None]
    mci = float(np.mean([b.mci for b in ok])) if ok else None
    status = "ok" if len([b for b in bones.values() if b.status == "ok"]) >= 2 else "refused"
    return AnalysisResult(status=status, bones=bones, mci=mci, **common)


def caption(result: AnalysisResult) -> str:
    if result.status != "ok":
        return f"{result.status}: {result.reason}"
    parts = []
    for name, bone in result.bones.items():
        parts.append(f"{name} {bone.mci:.2f}" if bone.mci is not None else f"{name} {bone.status}")
    return "MCI " + ", ".join(parts)


def caption_json(obj: dict) -> str:
    if obj.get("status") != "ok":
        return f"{obj.get('status')}: {obj.get('reason')}"
    parts = []
    for name, bone in (obj.get("bones") or {}).items():
        mci = bone.get("mci")
        parts.append(f"{name} {mci:.2f}" if mci is not None else f"{name} {bone.get('reason') or bone.get('status')}")
    return "MCI " + ", ".join(parts)


def tiles_from_cli(tile_dir: Path, results: Path, tile_px: int) -> list[tuple[str, str, Image.Image]]:
    import json

    tiles = []
    for line in results.read_text().splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        name = Path(obj["file"]).name
        png = tile_dir / (Path(name).stem + ".png")
        if not png.is_file():
            continue
        with Image.open(png) as im:
            tile = im.convert("RGB")
        tile.thumbnail((tile_px, tile_px))
        tiles.append((name, caption_json(obj), tile))
    return tiles


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, nargs="?")
    p.add_argument("--tiles", type=Path, help="overlay PNGs written by dxr-node analyze --overlay-dir")
    p.add_argument("--results", type=Path, help="the JSON Lines dxr-node analyze printed")
    p.add_argument("--pixel-spacing", type=float, default=0.1, help="pixel size in mm (default 0.1)")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "overlays" / "contact_sheet.png")
    p.add_argument("--tile", type=int, default=480, help="longer side of each overlay (px)")
    p.add_argument("--columns", type=int, default=5)
    args = p.parse_args(argv)
    if args.tiles is not None:
        if args.results is None or not args.results.is_file() or not args.tiles.is_dir():
            print("contact_sheet: --tiles needs an existing folder and --results JSONL", file=sys.stderr)
            return 2
        tiles = tiles_from_cli(args.tiles, args.results, args.tile)
        if not tiles:
            print(f"contact_sheet: no overlays in {args.tiles}", file=sys.stderr)
            return 2
    else:
        if args.folder is None or not args.folder.is_dir():
            print(f"contact_sheet: {args.folder} is not a folder", file=sys.stderr)
            return 2
        files = sorted(f for f in args.folder.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".dcm"))
        if not files:
            print(f"contact_sheet: no images in {args.folder}", file=sys.stderr)
            return 2
        tiles = []
        for path in files:
            image = load_image(path)
            result = analyse_file(image, args.pixel_spacing)
            tile = draw_overlay(image, result, max_side_px=args.tile)
            tiles.append((path.name, caption(result), tile))
            print(f"{path.name}: {caption(result)}", file=sys.stderr)
    cap_h = 40
    cell = (args.tile, args.tile + cap_h)
    cols = min(args.columns, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell[0], rows * cell[1]), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = load_font(13)
    for i, (name, text, tile) in enumerate(tiles):
        x0, y0 = (i % cols) * cell[0], (i // cols) * cell[1]
        sheet.paste(tile, (x0 + (cell[0] - tile.size[0]) // 2, y0 + cap_h))
        draw.text((x0 + 4, y0 + 3), name.replace("fracatlas_", ""), fill=(255, 255, 255), font=font)
        draw.text((x0 + 4, y0 + 21), text, fill=(255, 214, 10), font=font)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"contact sheet: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
