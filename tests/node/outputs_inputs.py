"""Inputs for the SR/SC tests: phantom hand datasets and AnalysisResults built from their truth.

The results are real ``analysis.result.AnalysisResult`` objects whose numbers come from the
phantom's known geometry (not from the engine), so the output tests check ``node/outputs``
alone and know every number they expect. Pixel points are ``(column, row)``.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pydicom
import pytest

from analysis.result import AnalysisResult, BoneResult, refused
from tests.phantom import make_dataset, make_hand

SCORES_OMITTED = "T- and Z-scores omitted: the patient's sex is not known (PatientSex)."
SPACING_MM = 0.2
"""Coarse enough to keep the tests fast; outputs do not care about the resolution."""


@lru_cache(maxsize=None)
def _hand(seed: int, laterality: str, view: str, rotation_deg: float = 0.0):
    return make_hand(seed=seed, spacing_mm=SPACING_MM, laterality=laterality, view=view, noise=0.005,
                     rotation_deg=rotation_deg)


def hand_dataset(
    *,
    modality: str = "CR",
    photometric: str = "MONOCHROME2",
    laterality: str | None = "L",
    charset: str | None = "ISO_IR 100",
    patient_name: str = "Phantom^Hand",
    view: str = "PA",
    study_uid: str | None = None,
    instance_number: int = 1,
    seed: int = 0,
    rotation_deg: float = 0.0,
):
    """A phantom hand radiograph as a pydicom Dataset, and its truth."""
    image, truth = _hand(seed, laterality or "L", view, rotation_deg)
    ds = make_dataset(
        image,
        truth,
        modality=modality,
        photometric=photometric,
        patient_name=patient_name,
        charset=charset,
        laterality=laterality,
        study_uid=study_uid,
        spacing_attribute="ImagerPixelSpacing" if modality == "DX" else "PixelSpacing",
    )
    ds.InstanceNumber = instance_number
    if view != "PA":
        ds.ViewPosition = ""  # a modality writes no PA for an oblique/lateral
    return ds, truth


def _edges(base_px, head_px, outer_radius_px: float, inner_radius_px: float) -> dict[str, list]:
    """Straight cortical edges along the ROI (as a perfect detector would find on the phantom)."""
    base, head = np.asarray(base_px, float), np.asarray(head_px, float)
    along = head - base
    normal = np.array([-along[1], along[0]]) / np.linalg.norm(along)
    start, end = base + 0.35 * along, base + 0.65 * along
    edges = {}
    for key, offset in (("outer_a", -outer_radius_px), ("inner_a", -inner_radius_px),
                        ("inner_b", inner_radius_px), ("outer_b", outer_radius_px)):
        edges[key] = [tuple(map(float, start + offset * normal)), tuple(map(float, end + offset * normal))]
    return edges


def _roi_polygon(base_px, head_px, width_px: float) -> list[tuple[float, float]]:
    """Rectangle over the middle 30 % of the shaft, ``width_px`` across, as (column, row)."""
    base, head = np.asarray(base_px, float), np.asarray(head_px, float)
    along = head - base
    normal = np.array([-along[1], along[0]]) / np.linalg.norm(along)
    start, end = base + 0.35 * along, base + 0.65 * along
    half = 0.5 * width_px * normal
    return [tuple(map(float, p)) for p in (start - half, end - half, end + half, start + half)]


def result_from_truth(
    truth,
    *,
    laterality: str | None = "L",
    refuse_bone: str | None = None,
    with_scores: bool = True,
    pixel_spacing_source: str = "PixelSpacing",
) -> AnalysisResult:
    """An ``ok`` AnalysisResult whose bone numbers are the phantom's truth."""
    bones = {}
    for name in ("II", "III", "IV"):
        t = truth.bones[name]
        if name == refuse_bone:
            bones[name] = BoneResult(
                name=name, status="refused", reason="foreign_object_in_roi",
                message="Metal lies over the measurement region of this bone.",
            )
            continue
        width_px = t.outer_width_mm / truth.spacing_mm
        polygon = _roi_polygon(t.base_px, t.head_px, width_px * 1.6)
        thickness, width = t.cortical_thickness_mm, t.outer_width_mm
        bones[name] = BoneResult(
            name=name,
            cortical_thickness_mm=thickness,
            outer_width_mm=width,
            length_mm=t.length_mm,
            mci=2 * thickness / width,
            vpa_mm=math.pi * thickness * (1 - thickness / width),
            profiles_used=40,
            profiles_total=44,
            quality=0.91,
            roi_center_px=t.mid_px,
            roi_polygon_px=polygon,
            axis_px=[t.base_px, t.head_px],
            edges_px=_edges(t.base_px, t.head_px, width_px / 2, (width - 2 * thickness) / truth.spacing_mm / 2),
        )
    ok = [b for b in bones.values() if b.status == "ok"]
    mean_t = float(np.mean([b.cortical_thickness_mm for b in ok]))
    mean_w = float(np.mean([b.outer_width_mm for b in ok]))
    mean_vpa = float(np.mean([b.vpa_mm for b in ok]))
    bmd = 0.127 * mean_vpa  # T = 2, W = 8 mm lands near 0.598 g/cm2; the engine owns the real constant
    t_score = (bmd - 0.598) / 0.034
    who = "normal" if t_score >= -1 else "osteoporosis" if t_score <= -2.5 else "osteopenia"
    scores = dict(
        t_score=t_score, z_score=(bmd - 0.55) / 0.06, who_category=who,
        reference_name="Test reference, women (synthetic)", reference_provisional=True,
        reference_mean_g_cm2=0.598, reference_sd_g_cm2=0.034, z_reference_mean_g_cm2=0.55, z_reference_sd_g_cm2=0.06,
    ) if with_scores else dict(scores_omitted_reason=SCORES_OMITTED)
    return AnalysisResult(
        status="ok",
        laterality=laterality,
        view="PA",
        pixel_spacing_mm=truth.spacing_mm,
        pixel_spacing_source=pixel_spacing_source,
        image_shape=truth.shape,
        bones=bones,
        metacarpal_axes_px={n: [b.base_px, b.head_px] for n, b in truth.bones.items()},
        cortical_thickness_mm=mean_t,
        outer_width_mm=mean_w,
        mci=2 * mean_t / mean_w,
        vpa_mm=mean_vpa,
        bhi=4.21,
        porosity=0.0123,
        dxr_bmd_g_cm2=bmd,
        sex="F",
        age_years=62.0,
        **scores,
    )


def view_refusal(view: str, laterality: str | None = "L") -> AnalysisResult:
    return refused(f"{view}_view", laterality=laterality, view=view)


@dataclass
class ToolRun:
    returncode: int
    stdout: str
    stderr: str


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package dicom3tools/dcmtk; `make debs`)")
    return path


def run_tool(*args: str | Path, timeout_seconds: float = 60) -> ToolRun:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout_seconds,
                          errors="replace")
    return ToolRun(proc.returncode, proc.stdout, proc.stderr)


def save(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def walk_content(ds: pydicom.Dataset):
    """Every SR content item under ``ds``, at any depth."""
    stack = list(ds.get("ContentSequence", []))
    while stack:
        item = stack.pop()
        yield item
        stack.extend(item.get("ContentSequence", []))
