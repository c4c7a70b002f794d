"""Build the outputs of a tiny made-up study once, so a worker's first real study is not the slow one.

The first SR and SC a process builds pay for one-time work: highdicom loads its DICOM standard
tables (JSON, about a second), fonts are opened, the JPEG-LS encoder and Pillow's resamplers
are loaded. :func:`warm_up` does all of it when a worker starts, on a 96 x 64 synthetic
radiograph with a made-up measured result; what it builds is discarded.
"""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian

from analysis.result import BONE_NAMES, AnalysisResult, BoneResult
from node.report.build import build_study_outputs
from node.report.options import OutputOptions

__all__ = ["warm_up"]

WARM_UP_UID_ROOT = "2.25.1"
"""Prefix of the made-up study's UIDs (never stored, never sent)."""


def _dataset(rows: int = 64, cols: int = 96) -> Dataset:
    """A minimal CR image: a bright band (the 'bone') across a darker field, 0.2 mm pixels."""
    ds = Dataset()
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = f"{WARM_UP_UID_ROOT}.1"
    ds.StudyInstanceUID = f"{WARM_UP_UID_ROOT}.2"
    ds.SeriesInstanceUID = f"{WARM_UP_UID_ROOT}.3"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition, ds.ImageLaterality = "CR", "HAND", "PA", "L"
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientAge = "Warm^Up", "WARMUP", "F", "060Y"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20000101", "000000", "", "1"
    ds.ReferringPhysicianName, ds.PatientBirthDate, ds.SeriesNumber, ds.InstanceNumber = "", "", 1, 1
    ds.PixelSpacing = [0.2, 0.2]
    pixels = np.full((rows, cols), 400, dtype=np.uint16)
    pixels[:, cols // 3: 2 * cols // 3] = 2000
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    return ds


def _result(rows: int = 64, cols: int = 96) -> AnalysisResult:
    """A made-up measured result: three vertical ROIs with their edges."""
    bones = {}
    for k, name in enumerate(BONE_NAMES):
        x = cols * (k + 1) / 4
        polygon = [(x - 6, 20.0), (x + 6, 20.0), (x + 6, 44.0), (x - 6, 44.0)]
        edges = {key: [(x + dx, 20.0), (x + dx, 44.0)]
                 for key, dx in (("outer_low", -5), ("inner_low", -2), ("inner_high", 2), ("outer_high", 5))}
        bones[name] = BoneResult(name, cortical_thickness_mm=0.6, outer_width_mm=2.0, length_mm=10.0, mci=0.6,
                                 vpa_mm=1.0, profiles_used=10, profiles_total=10, quality=0.9,
                                 roi_center_px=(x, 32.0), roi_polygon_px=polygon, axis_px=[(x, 60.0), (x, 4.0)],
                                 edges_px=edges)
    return AnalysisResult(
        status="ok", laterality="L", view="PA", pixel_spacing_mm=0.2, pixel_spacing_source="PixelSpacing",
        image_shape=(rows, cols), bones=bones, hand_outline_px=[(2.0, 2.0), (cols - 2.0, 2.0), (cols / 2, rows - 2.0)],
        metacarpal_axes_px={name: bone.axis_px for name, bone in bones.items()},
        cortical_thickness_mm=0.6, outer_width_mm=2.0, length_mm=10.0, mci=0.6, vpa_mm=1.0, bhi=2.0, porosity=0.01,
        dxr_bmd_g_cm2=0.55, t_score=-1.2, z_score=-0.3, who_category="osteopenia", sex="F", age_years=60.0,
    )


def warm_up(options: OutputOptions = OutputOptions()) -> int:
    """Build (and discard) the SR and SC of a made-up measured study, and encode them; returns
    the number of outputs built (2 with the picture on)."""
    outputs = build_study_outputs([(_dataset(), _result())], uid_seed="warm-up", options=options)
    for ds in outputs:
        ds.save_as(io.BytesIO(), enforce_file_format=True)
    return len(outputs)
