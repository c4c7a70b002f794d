"""The SR's measurement groups (TID 1501/1411): one per metacarpal, the combined result, unused images.
"""

from __future__ import annotations

import copy
import math

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from analysis.result import BONE_NAMES, REASON_MESSAGES, AnalysisResult, BoneResult
from node.report.charset import clip_ut
from node.report.codes import (
    ALGORITHM_NAME, ANALYSIS_OUTCOME, BHI, BONE_MODIFIERS, COMMENT, MEAN, PROVISIONAL_REFERENCE, REFERENCE_STATUS,
    SCREENING_CATEGORY, SCREENING_VALUES, SOURCED_REFERENCE, STANDARD_DEVIATION, CORTICAL_THICKNESS, DXR_BMD, FULL_SERVICE, G_CM2, HAND, IMAGE_USE,
    LATERALITY_CODES, MEAN_CORTICAL_THICKNESS, MEAN_METACARPAL_INDEX, MEAN_OUTER_WIDTH, MEASURED, METACARPAL,
    METACARPAL_INDEX, MM, NO_UNITS, NOT_MEASURED, OUTER_WIDTH, PIXEL_SPACING_SOURCE, PIXEL_SPACING_SOURCES,
    RATIO, REASON_CODES, REDUCED_SERVICE, REFUSAL_REASON, SERVICE_EXTENT, T_SCORE, T_SCORE_UNIT,
    UNKNOWN_REASON, USED_FOR_MEASUREMENT, VPA, Z_SCORE, Z_SCORE_UNIT,
)
from node.report.options import OutputOptions
from node.report.plan import ImageEntry, UnusedEntry, describe_image, hand_words
from node.report.uids import derived_uid

__all__ = ["algorithm_id", "bone_group", "combined_group", "library_image", "observation_context", "unused_group", "with_comment"]


def observation_context(options: OutputOptions) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid("device", options.manufacturer, options.device_name),
        name=options.device_name,
        manufacturer_name=options.manufacturer,
        model_name=f"{options.device_name} {options.software_version}",
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def algorithm_id(result: AnalysisResult) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=result.analysis_version)


def library_image(ds: Dataset) -> Dataset:
    """The header highdicom's Image Library entry reads.

    highdicom's projection-radiography descriptors (TID 1603) need both PatientOrientation and
    ImagerPixelSpacing and raise when a CR lacks either; such images are listed with the
    common descriptors only (modality comes from the SOP Class, rows, columns).
    """
    orientation = ds.get("PatientOrientation")
    spacing = ds.get("ImagerPixelSpacing")
    if orientation and len(orientation) == 2 and spacing and len(spacing) == 2:
        return ds
    header = Dataset()
    for element in ds:
        if element.tag != 0x7FE00010:
            header.add(copy.deepcopy(element))
    header.Modality = "OT"  # only steers highdicom away from TID 1603; never written out
    return header


def _finding_site(hand: str, anatomy=METACARPAL, bone: str | None = None) -> hd.sr.FindingSite:
    """Finding site with laterality; a metacarpal carries which one (II-IV) as a coded topographical modifier."""
    return hd.sr.FindingSite(anatomic_location=anatomy, laterality=LATERALITY_CODES.get(hand),
                             topographical_modifier=BONE_MODIFIERS.get(bone) if bone else None)


def _image_region(ds: Dataset, points) -> hd.sr.ImageRegion:
    """A closed POLYLINE on ``ds`` from (column, row) pixel centres, clipped to the image.

    SCOORD puts (0, 0) at the top-left corner of the top-left pixel, so centres sit at +0.5.
    """
    polygon = np.asarray(points, dtype=np.float64) + 0.5
    polygon[:, 0] = np.clip(polygon[:, 0], 0.0, float(ds.Columns))
    polygon[:, 1] = np.clip(polygon[:, 1], 0.0, float(ds.Rows))
    if not np.array_equal(polygon[0], polygon[-1]):
        polygon = np.vstack([polygon, polygon[:1]])
    return hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=polygon,
                             source_image=hd.sr.SourceImageForRegion.from_source_image(ds))


def _whole_image(ds: Dataset) -> list[tuple[float, float]]:
    """The image's outline as pixel centres (its region when nothing smaller is known)."""
    c, r = float(ds.Columns) - 1.0, float(ds.Rows) - 1.0
    return [(-0.5, -0.5), (c + 0.5, -0.5), (c + 0.5, r + 0.5), (-0.5, r + 0.5)]


def _hull(points: np.ndarray) -> list[tuple[float, float]]:
    """Convex hull (monotone chain) of (column, row) points, counter-clockwise."""
    pts = sorted(set(map(tuple, np.asarray(points, dtype=np.float64).tolist())))
    if len(pts) < 3:
        return pts

    def half(seq):
        out: list = []
        for p in seq:
            while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (p[1] - out[-2][1])
                                     - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0])) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return lower[:-1] + upper[:-1]

REPORT_DECIMALS: dict[str, int] = {
    CORTICAL_THICKNESS.value: 3, OUTER_WIDTH.value: 3, VPA.value: 3, METACARPAL_INDEX.value: 4,
    MEAN_CORTICAL_THICKNESS.value: 3, MEAN_OUTER_WIDTH.value: 3, MEAN_METACARPAL_INDEX.value: 4,
    DXR_BMD.value: 4, T_SCORE.value: 2, Z_SCORE.value: 2, BHI.value: 3,
}
"""Decimals each measurement is written with: finer than its precision, short enough to read
(0.001 mm is far below the ~0.02 mm precision of cortical thickness)."""


def _num(name, value: float | None, unit, **kwargs) -> hd.sr.Measurement | None:
    if value is None or not math.isfinite(float(value)):
        return None
    value = round(float(value), REPORT_DECIMALS.get(name.value, 6)) + 0.0  # + 0.0: no "-0.0"
    return hd.sr.Measurement(name=name, value=value, unit=unit, **kwargs)


def with_comment(group, text: str):
    """Append a TEXT "Comment" (DCM 121106) to a measurement group's container."""
    container = group[0]
    item = hd.sr.TextContentItem(
        name=COMMENT, value=clip_ut(text), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    if "ContentSequence" not in container:
        container.ContentSequence = hd.sr.ContentSequence()
    container.ContentSequence.append(item)
    return group


def bone_group(image: ImageEntry, bone: BoneResult, hand: str, uid_seed: str):
    label = f"Metacarpal {bone.name}, {hand_words(hand)}"
    tracking = hd.sr.TrackingIdentifier(uid=derived_uid(uid_seed, "tracking", hand, bone.name), identifier=label)
    algorithm = algorithm_id(image.result)
    # Two finding sites: first the bone itself (private code, so that viewers that print one
    # finding site, as OHIF v3 does, label II, III and IV differently), then the standard
    # SCT Metacarpal with the same bone as its topographical modifier.
    sites = [hd.sr.FindingSite(anatomic_location=BONE_MODIFIERS[bone.name], laterality=LATERALITY_CODES.get(hand)),
             _finding_site(hand, bone=bone.name)] if bone.name in BONE_MODIFIERS else [_finding_site(hand)]
    if bone.status != "ok":
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(image.dataset)],
            finding_sites=sites,
            algorithm_id=algorithm,
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(ANALYSIS_OUTCOME, NOT_MEASURED),
                hd.sr.QualitativeEvaluation(
                    REFUSAL_REASON, REASON_CODES.get(bone.reason or "", UNKNOWN_REASON)
                ),
            ],
        )
        return with_comment(
            group, f"{label}: not measured. {bone.message or REASON_MESSAGES.get(bone.reason or '', '')}".strip()
        )
    # Finding site and algorithm are stated once on the group; repeating them on every
    # measurement only makes the report harder to read.
    measurements = [
        _num(CORTICAL_THICKNESS, bone.cortical_thickness_mm, MM),
        _num(OUTER_WIDTH, bone.outer_width_mm, MM),
        _num(METACARPAL_INDEX, bone.mci, RATIO),
        _num(VPA, bone.vpa_mm, MM),
    ]
    content = dict(
        tracking_identifier=tracking,
        finding_sites=sites,
        algorithm_id=algorithm,
        measurements=[m for m in measurements if m is not None],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(ANALYSIS_OUTCOME, MEASURED)],
    )
    # Every group with numbers carries an image region on the radiograph (OHIF v3 needs one to
    # display the group): the ROI, or the whole image when the result has no ROI polygon.
    points = bone.roi_polygon_px if len(bone.roi_polygon_px) >= 3 else _whole_image(image.dataset)
    region = _image_region(image.dataset, points)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **content)


def _bmd_reference(result: AnalysisResult) -> hd.sr.MeasurementProperties | None:
    """TID 311 on DXR-BMD: the young-adult reference population's mean and SD (g/cm2) and its name."""
    if result.reference_mean_g_cm2 is None or result.reference_sd_g_cm2 is None:
        return None
    values = [
        hd.sr.NumContentItem(name=name, value=round(float(value), 4), unit=G_CM2,
                             relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES)
        for name, value in ((MEAN, result.reference_mean_g_cm2), (STANDARD_DEVIATION, result.reference_sd_g_cm2))
    ]
    description = result.reference_name or "young-adult reference"
    if result.reference_provisional and "provisional" not in description.lower():
        description += " [provisional]"
    return hd.sr.MeasurementProperties(
        measurement_statistical_properties=hd.sr.MeasurementStatisticalProperties(
            values=values, description=clip_ut(description)))


def _combined_region(image: ImageEntry) -> hd.sr.ImageRegion:
    """The outline (convex hull) of the measured ROIs, else the whole image."""
    polygons = [b.roi_polygon_px for b in image.result.bones.values() if b.status == "ok" and len(b.roi_polygon_px) >= 3]
    hull = _hull(np.concatenate([np.asarray(p, dtype=np.float64) for p in polygons])) if polygons else []
    return _image_region(image.dataset, hull if len(hull) >= 3 else _whole_image(image.dataset))


def combined_group(image: ImageEntry, hand: str, uid_seed: str):
    result = image.result
    algorithm = algorithm_id(result)
    site = _finding_site(hand, HAND)
    # The first five numbers are the ones a reader needs (OHIF shows five): DXR-BMD, T, Z, BHI, mean MCI.
    measurements = [
        _num(DXR_BMD, result.dxr_bmd_g_cm2, G_CM2, properties=_bmd_reference(result)),
        _num(T_SCORE, result.t_score, T_SCORE_UNIT),
        _num(Z_SCORE, result.z_score, Z_SCORE_UNIT),
        _num(BHI, result.bhi, NO_UNITS),
        _num(MEAN_METACARPAL_INDEX, result.mci, RATIO),
        _num(MEAN_CORTICAL_THICKNESS, result.cortical_thickness_mm, MM),
        _num(MEAN_OUTER_WIDTH, result.outer_width_mm, MM),
    ]
    evaluations = [
        hd.sr.QualitativeEvaluation(ANALYSIS_OUTCOME, MEASURED),
        hd.sr.QualitativeEvaluation(IMAGE_USE, USED_FOR_MEASUREMENT),
        hd.sr.QualitativeEvaluation(SERVICE_EXTENT, REDUCED_SERVICE if result.reduced_service else FULL_SERVICE),
    ]
    category = SCREENING_VALUES.get((result.who_category or "").lower())
    if category is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(SCREENING_CATEGORY, category))
    if result.reference_name:
        evaluations.append(hd.sr.QualitativeEvaluation(
            REFERENCE_STATUS, PROVISIONAL_REFERENCE if result.reference_provisional else SOURCED_REFERENCE))
    source = PIXEL_SPACING_SOURCES.get(result.pixel_spacing_source or "")
    if source is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(PIXEL_SPACING_SOURCE, source))
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(uid_seed, "tracking", hand, "combined"), identifier=f"DXR-BMD, {hand_words(hand)}"
        ),
        referenced_region=_combined_region(image),
        finding_sites=[site],
        algorithm_id=algorithm,
        measurements=[m for m in measurements if m is not None],
        qualitative_evaluations=evaluations,
    )
    notes = []
    if result.reduced_service:
        measured = ", ".join(n for n in BONE_NAMES if result.bones.get(n) and result.bones[n].status == "ok")
        notes.append(f"Reduced service: only metacarpals {measured} could be measured.")
    if result.reference_name:
        notes.append(f"Reference population: {result.reference_name}."
                     + (" PROVISIONAL: part of this reference is a model, not a measured table." if result.reference_provisional else ""))
    if result.scores_omitted_reason:
        notes.append(result.scores_omitted_reason)
    elif result.t_score is None and result.z_score is None:
        notes.append("T- and Z-scores omitted: no reference population is configured.")
    if category is not None:
        notes.append("DXR screening category from the DXR T-score with the WHO thresholds (-1, -2.5); "
                     "WHO categories are defined for central DXA, so this is not a diagnosis.")
    notes.append("Computed estimate from a radiograph (digital X-ray radiogrammetry), not a DXA measurement.")
    return with_comment(group, " ".join(notes))


def unused_group(unused: UnusedEntry, uid_seed: str, owner: str):
    ds = unused.image.dataset
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derived_uid(uid_seed, "tracking", owner, "unused", ds.SOPInstanceUID),
            identifier=f"Image not used ({describe_image(ds)})",
        ),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(IMAGE_USE, unused.use)],
    )
    return with_comment(group, f"Image {describe_image(ds)} not used: {unused.text}")
