"""Digital X-ray radiogrammetry: pure maths on hand radiographs.

``analyse(dataset)`` is the one entry point the node and the CLI call; ``analyse_image`` does
the same on a plain array (PNG/JPEG research input). This package never imports ``node`` and
never touches a socket or writes a file.

Pipeline: calibration (pixels, bone bright, mm per pixel) -> ``locate.locate_hand`` (view,
metacarpals I-V and their axes) -> ``measure.measure_bone`` on II, III, IV -> ``indices.combine``
(mean T, W, L first, then MCI, VPA, BHI, DXR-BMD) -> ``reference`` T/Z-scores.
At least two measured bones give ``status == "ok"`` (two is a reduced service); otherwise the
image is refused with the bones' reason.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from typing import Any

import numpy as np

from analysis.result import ANALYSIS_VERSION, BONE_NAMES, AnalysisResult, BoneResult, refused

__all__ = ["ANALYSIS_VERSION", "AnalysisResult", "BoneResult", "analyse", "analyse_image", "analyse_located",
           "date_from_da"]

MIN_BONES = 2
"""Fewest measured metacarpals (of II-IV) for a result."""
MCI_CONSISTENCY = 0.35
"""Largest relative deviation of one bone's 2T/W from the hand's median (see _check_consistency)."""


def laterality_from_dataset(ds: Any) -> str | None:
    """``L`` or ``R`` from ImageLaterality, else (series) Laterality; None otherwise. Never guessed."""
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(ds.get(keyword, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    return None


def sex_from_dataset(ds: Any) -> str | None:
    value = str(ds.get("PatientSex", "") or "").strip().upper()
    return value if value in ("F", "M") else None


def date_from_da(value: Any) -> _dt.date | None:
    """A DICOM DA (``YYYYMMDD``) as a date; None when absent or not a valid date."""
    text = str(value or "").strip()
    try:
        return _dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8])) if len(text) == 8 else None
    except ValueError:
        return None


def age_from_dataset(ds: Any) -> float | None:
    """Age in years from PatientAge (``nnnY/M/W/D``), else PatientBirthDate and the study date."""
    text = str(ds.get("PatientAge", "") or "").strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] in "YMWD":
        n = int(text[:3])
        return {"Y": float(n), "M": n / 12.0, "W": n * 7 / 365.25, "D": n / 365.25}[text[3]]
    birth = date_from_da(ds.get("PatientBirthDate"))
    when = next((d for d in (date_from_da(ds.get(k)) for k in ("StudyDate", "AcquisitionDate", "ContentDate", "SeriesDate")) if d), None)
    if birth and when and when >= birth:
        return (when - birth).days / 365.25
    return None


ADULT_MIN_AGE_YEARS = 18.0
"""Youngest patient age (years, from the header or given) that is analysed: DXR-BMD and its
references are adults'; paediatric DXR uses its own tables up to 17-18 years
(../shared/research/dxr-method.md section 1.4). A younger patient's film is refused
``immature_skeleton`` before the image is looked at, whatever the hand looks like."""


def analyse(
    dataset: Any,
    *,
    pixel_spacing_mm: float | None = None,
    sex: str | None = None,
    age_years: float | None = None,
    reference: Any = None,
) -> AnalysisResult:
    """Measure metacarpals II-IV on one hand radiograph.

    Parameters
    ----------
    dataset : pydicom.Dataset
        The radiograph, pixel data included.
    pixel_spacing_mm : float, optional
        Overrides the header's spacing (mm per pixel); ``pixel_spacing_source`` is then ``cli``.
    sex, age_years : optional
        Override PatientSex / PatientAge (or birth date and study date) from the header.
    reference : analysis.reference.ReferenceTables, optional
        Young-adult and age-matched tables for T- and Z-scores; without it scores are omitted.
    """
    from analysis.calibration import CalibrationError, image_from_dataset

    laterality = laterality_from_dataset(dataset)
    sex = sex or sex_from_dataset(dataset)
    if age_years is None:
        age_years = age_from_dataset(dataset)
    try:
        calibrated = image_from_dataset(dataset, pixel_spacing_mm=pixel_spacing_mm)
    except CalibrationError as exc:
        result = refused(exc.reason, exc.message, laterality=laterality, sex=sex, age_years=age_years)
        if exc.reason == "unreadable":
            result.status = "error"
        return result
    return analyse_image(
        calibrated.image,
        pixel_spacing_mm=calibrated.pixel_spacing_mm,
        pixel_spacing_source=calibrated.pixel_spacing_source,
        laterality=laterality,
        sex=sex,
        age_years=age_years,
        reference=reference,
    )


def analyse_image(
    image_bone_bright: np.ndarray,
    *,
    pixel_spacing_mm: float,
    pixel_spacing_source: str = "cli",
    laterality: str | None = None,
    sex: str | None = None,
    age_years: float | None = None,
    reference: Any = None,
) -> AnalysisResult:
    """Measure metacarpals II-IV on a radiograph given as an array with bone bright.

    Parameters
    ----------
    image_bone_bright : array (rows, cols)
        Grey values increasing with attenuation (any linear scale).
    pixel_spacing_mm : float
        Square pixel size (mm).
    pixel_spacing_source : str
        Where the spacing came from (reported).
    laterality : ``L``, ``R`` or None
        From the header only; reported, never used to find the bones.
    """
    from analysis.calibration import CalibrationError, check_spacing
    from analysis.locate import locate_hand

    image = np.ascontiguousarray(image_bone_bright, dtype=np.float64)
    base = _result_fields(image, pixel_spacing_mm, pixel_spacing_source, laterality, sex, age_years)
    try:
        check_spacing(float(pixel_spacing_mm))
    except CalibrationError as exc:
        return refused(exc.reason, exc.message, **base)
    if age_years is not None and age_years < ADULT_MIN_AGE_YEARS:
        return refused("immature_skeleton", f"The patient is {age_years:.0f} years old: DXR-BMD is only defined for "
                       f"adults (from {ADULT_MIN_AGE_YEARS:g} years).", **base)
    if image.ndim != 2 or not np.isfinite(image).all():
        return AnalysisResult(status="error", reason="unreadable",
                              message="The image is not a finite two-dimensional grayscale array.", **base)
    if min(image.shape) < 64:
        return AnalysisResult(status="error", reason="unreadable",
                              message=f"The image is too small ({image.shape[1]} x {image.shape[0]} pixels; "
                                      "at least 64 on each side).", **base)

    return analyse_located(image, locate_hand(image, float(pixel_spacing_mm)), pixel_spacing_mm=pixel_spacing_mm,
                           pixel_spacing_source=pixel_spacing_source, laterality=laterality, sex=sex,
                           age_years=age_years, reference=reference)


def _result_fields(image: np.ndarray, pixel_spacing_mm: float, pixel_spacing_source: str,
                   laterality: str | None, sex: str | None, age_years: float | None) -> dict[str, Any]:
    """The ``AnalysisResult`` fields every answer on this image carries, refusals included."""
    return dict(
        laterality=laterality, pixel_spacing_mm=float(pixel_spacing_mm), pixel_spacing_source=pixel_spacing_source,
        image_shape=tuple(int(n) for n in image.shape[:2]), sex=sex, age_years=age_years,
    )


def analyse_located(
    image_bone_bright: np.ndarray,
    location: Any,
    *,
    pixel_spacing_mm: float,
    pixel_spacing_source: str = "cli",
    laterality: str | None = None,
    sex: str | None = None,
    age_years: float | None = None,
    reference: Any = None,
) -> AnalysisResult:
    """The part of :func:`analyse_image` after the hand was located.

    ``location`` is an ``analysis.locate.HandLocation`` (or any object with ``view``,
    ``refusal``, ``metacarpals``, ``bone_refusals``, ``outline_rc``). Tests pass the phantom's
    known axes here to check the measurement independently of the hand finder.
    """
    from analysis.measure import measure_bone

    image = np.ascontiguousarray(image_bone_bright, dtype=np.float64)
    base = _result_fields(image, pixel_spacing_mm, pixel_spacing_source, laterality, sex, age_years)
    base["view"] = location.view
    base["metacarpal_axes_px"] = {n: a.axis_px() if hasattr(a, "axis_px") else
                                  [(a.base_rc[1], a.base_rc[0]), (a.head_rc[1], a.head_rc[0])]
                                  for n, a in location.metacarpals.items()}
    outline = np.asarray(location.outline_rc).reshape(-1, 2)
    base["hand_outline_px"] = [(float(c), float(r)) for r, c in outline]
    if location.refusal is not None:
        reason, message = location.refusal
        return refused(reason, message, **base)

    bones: dict[str, BoneResult] = {}
    for name in BONE_NAMES:
        if name in location.bone_refusals:
            reason, message = location.bone_refusals[name]
            bones[name] = BoneResult(name=name, status="refused", reason=reason, message=message)
        elif name not in location.metacarpals:
            bones[name] = BoneResult(name=name, status="refused", reason="bone_not_found",
                                     message=f"Metacarpal {name} was not found.")
        else:
            bones[name] = measure_bone(image, location.metacarpals[name], float(pixel_spacing_mm), name)
    return _finish(bones, base, sex=sex, age_years=age_years, reference=reference)


def _check_consistency(measured: list[BoneResult]) -> None:
    """Refuse (in place) bones whose 2T/W disagrees with the other metacarpals of the hand.

    II-IV of one hand have similar cortical indices; a bone more than ``MCI_CONSISTENCY``
    (relative) from the median of three is a failed measurement, not anatomy we can use. With
    two bones nobody can tell which one failed, so both are refused when they disagree that much.
    """
    if len(measured) < 2:
        return
    values = np.array([b.mci for b in measured])
    centre = float(np.median(values))
    if len(measured) >= 3:
        bad = [b for b in measured if abs(b.mci - centre) > MCI_CONSISTENCY * centre]
    else:
        bad = measured if values.max() * (1.0 - MCI_CONSISTENCY) > values.min() else []
    names = ", ".join(b.name for b in measured)
    for b in bad:
        b.status, b.reason = "refused", "low_quality"
        b.message = (f"The cortical index of metacarpal {b.name} (2T/W = {b.mci:.2f}) disagrees with the "
                     f"other measured metacarpals ({names}); the measurement is not trusted.")
        b.cortical_thickness_mm = b.outer_width_mm = b.mci = b.vpa_mm = None


def _finish(bones: dict[str, BoneResult], base: dict[str, Any], *, sex, age_years, reference) -> AnalysisResult:
    """Per-bone indices, combination over the measured bones, scores; or the refusal."""
    from analysis import indices
    from analysis.calibration import spacing_doubt

    measured = [b for b in bones.values() if b.status == "ok"]
    for b in measured:
        b.mci = indices.mci(b.cortical_thickness_mm, b.outer_width_mm)
        b.vpa_mm = indices.vpa_mm(b.cortical_thickness_mm, b.outer_width_mm)
    _check_consistency(measured)
    measured = [b for b in bones.values() if b.status == "ok"]
    if len(measured) < MIN_BONES:
        reasons = Counter(b.reason for b in bones.values() if b.status != "ok" and b.reason)
        reason = reasons.most_common(1)[0][0] if reasons else "bone_not_found"
        first = next(b for b in bones.values() if b.reason == reason)
        message = first.message or None
        if reason == "bone_not_found" or message is None:
            message = None  # the default sentence names II-IV
        return refused(reason, message, bones=bones, **base)
    combined = indices.combine([(b.cortical_thickness_mm, b.outer_width_mm, b.length_mm) for b in measured])
    result = AnalysisResult(
        status="ok", bones=bones, cortical_thickness_mm=combined.cortical_thickness_mm,
        outer_width_mm=combined.outer_width_mm, length_mm=combined.length_mm, mci=combined.mci,
        vpa_mm=combined.vpa_mm, bhi=combined.bhi, porosity=combined.porosity,
        dxr_bmd_g_cm2=combined.dxr_bmd_g_cm2, **base,
    )
    doubt = spacing_doubt({b.name: b.length_mm for b in measured}, float(base["pixel_spacing_mm"]))
    if doubt is not None:
        result.scores_omitted_reason = doubt  # DXR-BMD scales with the pixel size; its scores would mislead
    elif reference is None:
        result.scores_omitted_reason = "T- and Z-scores omitted: no reference tables are configured."
    else:
        scores = reference.scores(combined.dxr_bmd_g_cm2, sex, age_years)
        result.t_score, result.z_score = scores.t_score, scores.z_score
        result.who_category = scores.who_category
        result.reference_name = scores.reference_name
        result.reference_provisional = scores.provisional
        result.scores_omitted_reason = scores.omitted_reason
        if scores.young_adult is not None:
            result.reference_mean_g_cm2 = scores.young_adult.mean_g_cm2
            result.reference_sd_g_cm2 = scores.young_adult.sd_g_cm2
        if scores.age_matched is not None:
            result.z_reference_mean_g_cm2 = scores.age_matched.mean_g_cm2
            result.z_reference_sd_g_cm2 = scores.age_matched.sd_g_cm2
    return result
