"""The Secondary Capture result picture as DICOM: the page from :mod:`node.report.picture` in an SC instance.
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
import numpy as np
import pydicom.valuerep
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

from analysis.result import AnalysisResult
from node.report import picture
from node.report.chart import ReferenceBand
from node.report.charset import OWN_TEXT_ATTRIBUTES, fit_own_text
from node.report.options import OutputOptions
from node.report.panels import bone_bright_image
from node.report.plan import HandReport, describe_image, hand_words
from node.report.uids import derived_uid, sc_series_uid

__all__ = ["display_name", "picture_sc", "result_picture", "trend_line"]

SC_SERIES_NUMBER = 9902
"""Series number of the left hand's pictures; the right hand's is 9903, a hand of unknown side 9904."""
SC_SERIES_OFFSET = {"L": 0, "R": 1, "U": 2}
"""One SC series per hand, so that Laterality (a series attribute) is the same in every instance of a series."""
SC_TRANSFER_SYNTAX = JPEGLSLossless
"""JPEG-LS lossless: the page (flat colours, text, thin edge lines over a radiograph crop) comes to about
0.9 MB instead of 6.9 MB in ~0.1 s; lossless because the reader judges 1-px edge lines and small text
that lossy JPEG would smear. The exporter sends it uncompressed to a DIMSE peer that does not accept it."""


def _patient_line(ds: Dataset, result: AnalysisResult) -> picture.PatientLine:
    date = str(ds.get("StudyDate", "") or "")
    if len(date) == 8 and date.isdigit():
        date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    age = f"{result.age_years:.0f} y" if result.age_years is not None else str(ds.get("PatientAge", "") or "")
    return picture.PatientLine(
        name=display_name(ds.get("PatientName")),
        patient_id=str(ds.get("PatientID", "") or ""),
        sex=str(result.sex or ds.get("PatientSex", "") or ""),
        age=age,
        study_date=date,
    )


def display_name(name) -> str:
    """``Family, Given Middle`` as reading-room lists show it."""
    if not name:
        return ""
    name = pydicom.valuerep.PersonName(name) if not isinstance(name, pydicom.valuerep.PersonName) else name
    given = " ".join(p for p in (name.given_name, name.middle_name) if p)
    return ", ".join(p for p in (name.family_name, given) if p) or str(name)


def _reference_bands(reference: Any, sex: str | None) -> tuple[list[ReferenceBand], str | None]:
    """The reference rows for ``sex`` as ``ReferenceBand`` objects, and why there are none.

    ``reference`` is an ``analysis.reference.ReferenceTables`` (its ``rows`` carry ``sex``,
    ``age_min``/``age_max`` in years, ``mean_g_cm2``, ``sd_g_cm2`` and ``kind``
    ``young_adult`` or ``age_matched``).
    """
    if reference is None:
        return [], "no reference population is configured"
    sex = (sex or "").upper()[:1]
    if sex not in ("F", "M"):
        return [], "the patient's sex is not known"
    bands = [
        ReferenceBand(float(row.age_min), float(row.age_max), float(row.mean_g_cm2), float(row.sd_g_cm2),
                      kind=str(row.kind))
        for row in getattr(reference, "rows", [])
        if str(row.sex).upper()[:1] == sex
    ]
    word = "women" if sex == "F" else "men"
    return sorted(bands, key=lambda b: b.age_from_years), (None if bands else f"no reference for {word} is configured")


def _trend(history: Any, hand: str, result: AnalysisResult, study_date: str):
    """(age, BMD) of the earlier results of this hand, and the change since the last one."""
    from node.report.history import LSC_PERCENT, PRECISION_CV_PERCENT, trend, years_between

    if not history:
        return [], None
    same_hand = [p for p in history if p.hand == hand and (not study_date or p.study_date <= study_date)]
    earlier = []
    if result.age_years is not None:
        for point in same_hand:
            gap = years_between(point.study_date, study_date)
            if gap is not None:
                earlier.append((result.age_years - gap, point.bmd_g_cm2))
    found = trend(same_hand, hand, result.dxr_bmd_g_cm2, study_date)
    if found is None:
        return earlier, None
    return earlier, picture.TrendLine(found.previous.study_date, found.change_g_cm2, found.change_percent,
                                      found.significant, LSC_PERCENT, PRECISION_CV_PERCENT)


def result_picture(report: HandReport, options: OutputOptions) -> np.ndarray:
    """The result page of one hand as an RGB array (rows, columns, 3), shared by the SC and the PDF report."""
    image = report.measured
    source = image.dataset
    bands, no_bands_reason = _reference_bands(options.reference, image.result.sex or source.get("PatientSex"))
    earlier, trend_line = _trend(options.history, report.hand, image.result, str(source.get("StudyDate", "") or ""))
    rgb = picture.compose_picture(
        bone_bright_image(source),
        image.result,
        hand_label=hand_words(report.hand),
        unused=[picture.UnusedImage(describe_image(u.image.dataset), u.text) for u in report.unused],
        reference_bands=bands,
        reference_note=no_bands_reason,
        patient=_patient_line(source, image.result),
        measured_label=f"{describe_image(source)} ({source.get('Modality', '')})",
        earlier=earlier,
        trend=trend_line,
    )
    return np.asarray(rgb, dtype=np.uint8)


def trend_line(report: HandReport, options: OutputOptions):
    """The change since the patient's last result of this hand (``picture.TrendLine``), or None."""
    source = report.measured.dataset
    return _trend(options.history, report.hand, report.measured.result, str(source.get("StudyDate", "") or ""))[1]


def picture_sc(report: HandReport, instance_number: int, *, uid_seed: str, options: OutputOptions,
               compress: bool = True, pixels: np.ndarray | None = None) -> Dataset:
    """The SC instance of one hand's result page; ``pixels``: the page already composed by
    :func:`result_picture` (else composed here)."""
    image = report.measured
    source = image.dataset
    if pixels is None:
        pixels = result_picture(report, options)
    orientation = source.get("PatientOrientation")
    has_orientation = bool(orientation) and len(orientation) == 2
    kwargs = {}
    if "SpecificCharacterSet" in source:
        kwargs["specific_character_set"] = source.SpecificCharacterSet
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=sc_series_uid(str(source.StudyInstanceUID), report.hand, options.installation_uid,
                                          options.uid_root),
        series_number=SC_SERIES_NUMBER + SC_SERIES_OFFSET.get(report.hand, 2),
        sop_instance_uid=derived_uid(uid_seed, "sc", report.hand, root=options.uid_root),
        instance_number=instance_number,
        manufacturer=options.manufacturer,
        laterality=report.hand if report.hand in ("L", "R") else None,
        # highdicom wants an orientation for PATIENT coordinates and accepts only single-letter
        # values; a placeholder is replaced below by the source's own (the picture shows the
        # hand as stored, so it still holds), or emptied when the source had none.
        patient_orientation=("L", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description="DXR-BMD result picture (computed estimate)",
        **kwargs,
    )
    sc.PatientOrientation = list(orientation) if has_orientation else None
    if report.hand == "U":
        sc.Laterality = None
    sc.ManufacturerModelName = options.device_name
    sc.SoftwareVersions = options.software_version
    sc.ImageComments = "Computed estimate from a radiograph (DXR), not a DXA measurement."
    sc.BurnedInAnnotation = "YES"
    # A composed page (workstation): WSD, derived from the radiograph it shows.
    sc.ConversionType = "WSD"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    sc.DerivationDescription = (
        "Result page composed by DXR Node: the radiograph (windowed for display, cropped to the hand) with the "
        "measurement regions and detected cortical edges drawn over it, magnified regions, results and chart."
    )
    if options.institution_name:
        sc.InstitutionName = options.institution_name
    fit_own_text(sc, OWN_TEXT_ATTRIBUTES)
    if compress:
        try:
            sc.compress(SC_TRANSFER_SYNTAX, generate_instance_uid=False)
        except Exception as exc:  # noqa: BLE001 - no encoder: the uncompressed page is still a valid answer
            import logging

            logging.getLogger("dxr.report").warning(
                "event=picture_not_compressed transfer_syntax=%s error=%r", SC_TRANSFER_SYNTAX, str(exc))
    return sc
