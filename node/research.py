"""``dxr-node analyze`` and ``dxr-node locate``: the research commands (JSON Lines on stdout).

Their flags are declared in ``node/cli.py``'s verb table; this module runs them.

::

    dxr-node analyze PATH... [--pixel-spacing MM] [--sex F|M] [--age YEARS]
                     [--overlay-dir DIR] [--dicom-out DIR] [--reference-dir DIR]

PATH may be DICOM files, PNG/JPEG files (pixel size then only from ``--pixel-spacing``) or
folders (recursed; DICOM, PNG and JPEG files inside are analysed, others skipped; a progress bar
goes to stderr). One JSON object per input file is printed on stdout, in input order (folders
in sorted path order). Exit status: 0 when every input was measured or refused, 1 when any
input could not be read or analysed, 2 for bad arguments (one line on stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image, ImageFile
from pydicom.errors import InvalidDicomError

import analysis
from analysis.result import REASON_MESSAGES, AnalysisResult
from node.reference import DEFAULT_TABLE, load_reference_dir

__all__ = ["run_analyze", "run_locate", "locate_file", "expand_paths", "analyse_file", "analyse_dataset",
           "IMAGE_SUFFIXES", "DEFAULT_REFERENCE_DIR"]

log = logging.getLogger("dxr.research")

DEFAULT_REFERENCE_DIR = Path(__file__).resolve().parents[1] / "config" / "reference"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}


def _error(message: str) -> int:
    print(f"dxr-node: error: {message}", file=sys.stderr)
    return 2


def expand_paths(paths: list[str]) -> tuple[list[Path], bool]:
    """Input files in order; folders recursed (sorted), keeping only DICOM/PNG/JPEG files."""
    files: list[Path] = []
    any_folder = False
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            any_folder = True
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                if f.name.startswith(".") or f.name.upper() == "DICOMDIR":
                    continue
                if f.suffix.lower() in IMAGE_SUFFIXES | DICOM_SUFFIXES or _has_dicm_preamble(f):
                    files.append(f)
        else:
            files.append(path)
    return files, any_folder


def _file_head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of ``path`` (fewer for a short file; empty if unreadable)."""
    try:
        with path.open("rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def _has_dicm_preamble(path: Path) -> bool:
    return _file_head(path, 132)[128:132] == b"DICM"


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done = total, enabled and total > 0, 0
        self.tty = sys.stderr.isatty()
        self._last_decile = -1

    def step(self, name: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        frac = self.done / self.total
        bar = "#" * int(30 * frac)
        line = f"[{bar:<30}] {self.done}/{self.total} {name[-40:]}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(90))
            if self.done == self.total:
                sys.stderr.write("\n")
        elif int(frac * 10) != self._last_decile or self.done == self.total:
            self._last_decile = int(frac * 10)
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _read_picture(path: Path) -> np.ndarray:
    """A PNG/JPEG as a float grey image (bone bright as exported by a viewer).

    A JPEG missing its last few bytes (no end-of-image marker; common in exported archives) is
    read as viewers show it, the missing rows grey, rather than refused.
    """
    with Image.open(path) as im:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
        if im.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
            im = im.convert("L")
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise ValueError(f"unsupported image mode {arr.shape}")
    return arr.astype(np.float64)


def _analysis_error(path: Path | str, exc: Exception) -> AnalysisResult:
    """An analysis bug as an ``analysis_error`` result: logged in one line, never a traceback."""
    log.error("event=analysis_error file=%s error=%s: %s", path, type(exc).__name__, exc)
    return AnalysisResult(status="error", reason="analysis_error",
                          message=f"{REASON_MESSAGES['analysis_error']} ({type(exc).__name__})", file=str(path) or None)


def analyse_dataset(ds: Any, reference: Any, *, pixel_spacing_mm: float | None = None, sex: str | None = None,
                    age_years: float | None = None, want_image: bool = False,
                    name: str = "") -> tuple[AnalysisResult, np.ndarray | None]:
    """``(result, bone-bright image or None)`` for one DICOM data set; never raises.

    The per-image analysis of ``dxr-node analyze`` (and ``dxr-node screen``, which also feeds it
    data sets retrieved over WADO-RS). ``pixel_spacing_mm`` (mm) overrides the header; ``sex``
    and ``age_years`` override PatientSex/PatientAge; ``want_image`` also returns the calibrated
    image for an overlay; ``name`` goes into the log line of an analysis error.
    """
    try:
        result = analysis.analyse(ds, pixel_spacing_mm=pixel_spacing_mm, sex=sex, age_years=age_years,
                                  reference=reference)
        image = None
        if want_image and result.status != "error":
            # analysis.calibration compiles numba kernels on import: only when an overlay is asked for.
            from analysis.calibration import CalibrationError, bone_bright_pixels

            try:
                image = bone_bright_pixels(ds)
            except CalibrationError:
                image = None
    except Exception as exc:  # an analysis bug must not stop the batch; logged, reported as error
        return _analysis_error(name, exc), None
    return result, image


def analyse_file(path: Path, reference: Any, *, pixel_spacing_mm: float | None = None, sex: str | None = None,
                 age_years: float | None = None, want_image: bool = False):
    """``(result, bone-bright image or None, dataset or None)`` for one input file; never raises.

    DICOM (any suffix, or none), PNG and JPEG; a PNG/JPEG without ``pixel_spacing_mm`` is
    refused (``no_pixel_spacing``). ``result.file`` is ``str(path)``.
    """
    def error(reason: str, message: str):
        return AnalysisResult(status="error", reason=reason, message=message, file=str(path)), None, None

    ds, image, unreadable = _open_input(path)
    if unreadable:
        return error("unreadable", unreadable)
    if ds is not None:
        result, image = analyse_dataset(ds, reference, pixel_spacing_mm=pixel_spacing_mm, sex=sex,
                                        age_years=age_years, want_image=want_image, name=str(path))
    elif pixel_spacing_mm is None:
        result = analysis.refused("no_pixel_spacing", "A PNG/JPEG has no pixel size; give it with "
                                  "--pixel-spacing MM.", sex=sex, age_years=age_years)
    else:
        try:
            result = analysis.analyse_image(image, pixel_spacing_mm=pixel_spacing_mm, pixel_spacing_source="cli",
                                            sex=sex, age_years=age_years, reference=reference)
        except Exception as exc:  # an analysis bug must not stop the batch; logged, reported as error
            return _analysis_error(path, exc), None, None
    result.file = str(path)
    return result, image, ds


def _has_image_magic(path: Path) -> bool:
    return _file_head(path, 8).startswith((b"\x89PNG", b"\xff\xd8"))


def _open_input(path: Path) -> tuple[Any, np.ndarray | None, str | None]:
    """``(dataset, None, None)`` for DICOM (any suffix, or none), ``(None, bone-bright picture, None)``
    for PNG/JPEG, or ``(None, None, why)`` with the one-line reason the input is unreadable."""
    if not path.is_file():
        return None, None, f"No such file: {path}."
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        try:
            ds = pydicom.dcmread(path, force=path.suffix.lower() in DICOM_SUFFIXES)
            if "PixelData" not in ds and "SOPClassUID" not in ds:
                raise InvalidDicomError("no DICOM data elements")
            return ds, None, None
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
            if not _has_image_magic(path):
                return None, None, f"The file is neither DICOM nor PNG/JPEG ({type(exc).__name__})."
    try:
        return None, _read_picture(path), None
    except Exception as exc:  # Pillow raises many types for broken files
        return None, None, f"The image could not be read ({type(exc).__name__}: {exc})."


def _load_reference(directory: Path, explicit: bool, table: str | None = None):
    """The set ``table`` in ``directory`` (default dir: the shipped default set; a given dir without
    ``--reference``: every table in it), or None; ``explicit`` (given with --reference-dir): it must exist."""
    if explicit and not directory.is_dir():
        raise ValueError(f"--reference-dir {directory}: not a folder")
    if table is None and not explicit:
        table = DEFAULT_TABLE
    return load_reference_dir(directory, table)


def _unique_png(out_dir: Path, path: Path, used: set[str]) -> Path:
    stem = path.stem or "image"
    name = f"{stem}.png"
    k = 1
    while name in used:
        k += 1
        name = f"{stem}-{k}.png"
    used.add(name)
    return out_dir / name


def run_analyze(args: argparse.Namespace) -> int:
    """Run ``dxr-node analyze``; returns the exit status."""
    if args.pixel_spacing is not None and not (0 < args.pixel_spacing < 10):
        return _error("--pixel-spacing must be a positive pixel size in mm (e.g. 0.1)")
    if args.age is not None and not (0 <= args.age <= 130):
        return _error("--age must be an age in years between 0 and 130")
    explicit_ref = args.reference_dir is not None
    try:
        reference = _load_reference(Path(args.reference_dir) if explicit_ref else DEFAULT_REFERENCE_DIR, explicit_ref,
                                    getattr(args, "reference", None))
    except ValueError as exc:
        return _error(str(exc))
    overlay_dir = Path(args.overlay_dir) if args.overlay_dir else None
    dicom_dir = Path(args.dicom_out) if args.dicom_out else None
    try:
        for folder in (overlay_dir, dicom_dir):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _error(f"cannot create output folder: {exc}")
    # node.report pulls in highdicom and the numba kernels (seconds): only when pictures or DICOM are asked for.
    if overlay_dir is not None:
        from node.report.overlay import draw_overlay
    if dicom_dir is not None:
        from node.report import OutputOptions, write_dicom_outputs

    files, any_folder = expand_paths(list(args.paths))
    progress = _Progress(len(files), any_folder and not args.no_progress)
    used_names: set[str] = set()
    status = 0
    for path in files:
        result, image, ds = analyse_file(path, reference, pixel_spacing_mm=args.pixel_spacing, sex=args.sex,
                                         age_years=args.age, want_image=overlay_dir is not None)
        if result.status == "error":
            status = 1
        sys.stdout.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
        if overlay_dir is not None and image is not None:
            try:
                draw_overlay(image, result).save(_unique_png(overlay_dir, path, used_names))
            except Exception as exc:  # the measurement line is already out; say why the picture is not
                print(f"dxr-node: warning: no overlay for {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        if dicom_dir is not None and ds is not None and "SOPInstanceUID" in ds:
            try:
                write_dicom_outputs(ds, result, dicom_dir, options=OutputOptions(reference=reference))
            except Exception as exc:
                print(f"dxr-node: warning: no DICOM output for {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
                status = 1
        progress.step(path.name)
    return status


LOCATE_MAX_SPACING_MM = 1.0
"""``dxr-node locate`` works on pixels up to this size (mm): it finds bones, it measures nothing."""


def locate_file(path: Path, pixel_spacing_mm: float | None) -> tuple[dict[str, Any], np.ndarray | None, Any]:
    """``(JSON object, bone-bright image or None, HandLocation or None)`` for one input; never raises."""
    # The hand finder and calibration compile numba kernels on import: not on every dxr-node start.
    from analysis.calibration import CalibrationError, image_from_dataset
    from analysis.locate import locate_hand

    def answer(status: str, reason: str, message: str, spacing: float | None = None):
        return ({"file": str(path), "status": status, "reason": reason, "message": message, "view": None,
                 "maturity": None, "metacarpals": {}, "pixel_spacing_mm": spacing, "anatomy_pixel_spacing_mm": None},
                None, None)

    ds, image, unreadable = _open_input(path)
    if unreadable:
        return answer("error", "unreadable", unreadable)
    spacing = pixel_spacing_mm
    if ds is not None:
        try:
            calibrated = image_from_dataset(ds, pixel_spacing_mm, check_resolution=False)
        except CalibrationError as exc:
            return answer("error" if exc.reason == "unreadable" else "refused", exc.reason, exc.message)
        image, spacing = calibrated.image, calibrated.pixel_spacing_mm
    elif spacing is None:
        return answer("refused", "no_pixel_spacing", "A PNG/JPEG has no pixel size; give it with --pixel-spacing MM.")
    if spacing > LOCATE_MAX_SPACING_MM:
        return answer("refused", "resolution_too_low",
                      f"The pixels are {spacing:.3g} mm, larger than {LOCATE_MAX_SPACING_MM} mm: too coarse to find the "
                      "bones of a hand.", spacing)
    try:
        location = locate_hand(image, float(spacing))
    except Exception as exc:  # a finder bug must not stop the batch; logged, reported as error
        log.error("event=locate_error file=%s error=%s: %s", path, type(exc).__name__, exc)
        return answer("error", "analysis_error", f"{REASON_MESSAGES['analysis_error']} ({type(exc).__name__})", spacing)
    return {"file": str(path), **location.summary(float(spacing))}, image, location


def _location_overlay_result(location: Any, summary: dict[str, Any]):
    """An AnalysisResult carrying only what the finder found, for :func:`node.report.overlay.draw_overlay`."""
    ok = summary["status"] == "located"
    return AnalysisResult(
        status="ok" if ok else "refused", reason=summary["reason"], message=summary["message"],
        view=summary["view"],
        metacarpal_axes_px={n: a.axis_px() for n, a in location.metacarpals.items()},
        hand_outline_px=[(float(c), float(r)) for r, c in np.asarray(location.outline_rc).reshape(-1, 2)],
    )


def run_locate(args: argparse.Namespace) -> int:
    """Run ``dxr-node locate``; returns the exit status (0, 1 when an input was unreadable, 2 bad usage)."""
    if args.pixel_spacing is not None and not (0 < args.pixel_spacing <= LOCATE_MAX_SPACING_MM):
        return _error(f"--pixel-spacing must be a pixel size in mm, above 0 and at most {LOCATE_MAX_SPACING_MM}")
    overlay_dir = Path(args.overlay_dir) if args.overlay_dir else None
    if overlay_dir is not None:
        try:
            overlay_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return _error(f"cannot create output folder: {exc}")
        from node.report.overlay import draw_overlay  # highdicom and numba: only when pictures are asked for
    files, any_folder = expand_paths(list(args.paths))
    progress = _Progress(len(files), any_folder and not args.no_progress)
    used_names: set[str] = set()
    status = 0
    for path in files:
        summary, image, location = locate_file(path, args.pixel_spacing)
        if summary["status"] == "error":
            status = 1
        sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        if overlay_dir is not None and image is not None and location is not None:
            try:
                picture = draw_overlay(image, _location_overlay_result(location, summary))
                picture.save(_unique_png(overlay_dir, path, used_names))
            except Exception as exc:  # the JSON line is already out; say why the picture is not
                print(f"dxr-node: warning: no overlay for {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        progress.step(path.name)
    return status
