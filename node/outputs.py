"""The node's answer to PACS: a TID 1500 Comprehensive SR and a Secondary Capture picture.

This is the only module that writes output DICOM. ``build_study_outputs`` takes every
analysed instance of one study with its :class:`analysis.AnalysisResult` and returns, per
measured hand, one SR (highdicom ``MeasurementReport`` in a ``ComprehensiveSR``) and one SC
(highdicom ``SCImage``, RGB picture from :mod:`node.picture`); when no hand could be measured,
one refusal SR that says why. All UIDs are derived from ``uid_seed`` so that re-sending the
same run never duplicates an instance in PACS.

Codes: DICOM (DCM), SNOMED CT (SCT), UCUM and CPT (C4) where a standard code exists; the
private scheme :data:`PRIVATE_SCHEME` otherwise. Every code is listed in ``docs/codes.md``.
"""

from __future__ import annotations

import copy
import logging
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pydicom.charset
import pydicom.valuerep
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import analysis
from analysis.result import BONE_NAMES, REASON_MESSAGES, AnalysisResult, BoneResult

log = logging.getLogger(__name__)

PRIVATE_SCHEME = "99DXRNODE"
"""Designator of the project's private coding scheme (declared in every SR)."""

SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
ALGORITHM_NAME = "DXR Node radiogrammetry"
COMPREHENSIVE_SR_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.88.33"


def _private(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


# --- codes -----------------------------------------------------------------------------------
# Standard codes (see docs/codes.md for sources).
PROCEDURE_DXR_BMD = hd.sr.CodedConcept(
    value="0749T", scheme_designator="C4", meaning="DXR-BMD analysis of a digital X-ray (bone strength)"
)
METACARPAL = codes.SCT.Metacarpal  # SCT 36455000
HAND = codes.SCT.Hand  # SCT 85562004
LATERALITY_CODES = {"L": codes.SCT.Left, "R": codes.SCT.Right}
OUTER_WIDTH = codes.SCT.Width  # SCT 103355008
Z_SCORE = codes.DCM.ZScore  # DCM 113071
COMMENT = codes.DCM.Comment  # DCM 121106
WHO_VALUES = {
    "normal": hd.sr.CodedConcept("17621005", "SCT", "Normal"),
    "osteopenia": hd.sr.CodedConcept("312894000", "SCT", "Osteopenia"),
    "osteoporosis": hd.sr.CodedConcept("64859006", "SCT", "Osteoporosis"),
}

# Private codes: no standard concept exists for radiogrammetry quantities.
CORTICAL_THICKNESS = _private("DXR0001", "Metacarpal cortical thickness")
METACARPAL_INDEX = _private("DXR0002", "Metacarpal index")
VPA = _private("DXR0003", "Volume per area")
DXR_BMD = _private("DXR0004", "DXR-BMD")
T_SCORE = _private("DXR0005", "T-score")
BHI = _private("DXR0006", "Bone health index")
POROSITY = _private("DXR0007", "Cortical porosity index")
MEAN_CORTICAL_THICKNESS = _private("DXR0008", "Mean metacarpal cortical thickness")
MEAN_OUTER_WIDTH = _private("DXR0009", "Mean metacarpal outer width")
MEAN_METACARPAL_INDEX = _private("DXR0010", "Mean metacarpal index")
WHO_CATEGORY = _private("DXR0020", "WHO bone density category")
SERVICE_EXTENT = _private("DXR0021", "Extent of DXR service")
FULL_SERVICE = _private("DXR0022", "Full service: metacarpals II-IV measured")
REDUCED_SERVICE = _private("DXR0023", "Reduced service: two metacarpals measured")
PIXEL_SPACING_SOURCE = _private("DXR0030", "Pixel spacing source")
PIXEL_SPACING_SOURCES = {
    "PixelSpacing": _private("DXR0031", "Pixel Spacing (0028,0030)"),
    "ImagerPixelSpacing": _private("DXR0032", "Imager Pixel Spacing (0018,1164)"),
    "ImagerPixelSpacing/magnification": _private("DXR0033", "Imager Pixel Spacing / magnification"),
    "cli": _private("DXR0034", "Pixel spacing given by the operator"),
}
ANALYSIS_OUTCOME = _private("DXR0040", "DXR analysis outcome")
MEASURED = _private("DXR0041", "Measured")
NOT_MEASURED = _private("DXR0042", "No measurement made")
IMAGE_USE = _private("DXR0050", "Image use in DXR report")
USED_FOR_MEASUREMENT = _private("DXR0051", "Used for measurement")
NOT_BEST_IMAGE = _private("DXR0052", "Not used: another PA image was measured")
OTHER_HAND = _private("DXR0053", "Not used: belongs to the other hand's report")
REFUSAL_REASON = _private("DXR0060", "Reason no measurement was made")
REASON_CODES: dict[str, hd.sr.CodedConcept] = {
    "no_pixel_spacing": _private("DXR0101", "No pixel spacing"),
    "resolution_too_low": _private("DXR0102", "Resolution too low"),
    "not_pa_hand": _private("DXR0103", "Not a PA hand radiograph"),
    "lateral_view": _private("DXR0104", "Lateral view"),
    "oblique_view": _private("DXR0105", "Oblique view"),
    "immature_skeleton": _private("DXR0106", "Immature skeleton"),
    "bone_not_found": _private("DXR0107", "Metacarpals not found"),
    "foreign_object_in_roi": _private("DXR0108", "Foreign object in measurement region"),
    "low_quality": _private("DXR0109", "Low measurement quality"),
    "unreadable": _private("DXR0110", "Image unreadable"),
    "analysis_error": _private("DXR0111", "Analysis error"),
    "non_square_pixels": _private("DXR0112", "Pixels not square"),
}
UNKNOWN_REASON = _private("DXR0199", "Other reason")

# UCUM units.
MM = codes.UCUM.Millimeter
RATIO = hd.sr.CodedConcept("{ratio}", "UCUM", "ratio")
NO_UNITS = codes.UCUM.NoUnits  # "1"
G_CM2 = hd.sr.CodedConcept("g/cm2", "UCUM", "gram per square centimeter")
T_SCORE_UNIT = hd.sr.CodedConcept("{T-score}", "UCUM", "T-score")
Z_SCORE_UNIT = hd.sr.CodedConcept("{Z-score}", "UCUM", "Z-score")


def private_codes() -> list[hd.sr.CodedConcept]:
    """Every private code this module can write (docs/codes.md must list them all)."""
    found = [value for value in globals().values() if isinstance(value, hd.sr.CodedConcept)]
    found += list(PIXEL_SPACING_SOURCES.values()) + list(REASON_CODES.values())
    unique = {code.value: code for code in found if code.scheme_designator == PRIVATE_SCHEME}
    return [unique[key] for key in sorted(unique)]


# --- options and the public entry point ------------------------------------------------------
@dataclass(frozen=True)
class OutputOptions:
    """How the SR and SC describe their maker, and which objects to build.

    ``refusal_sr``: write an SR saying why when nothing could be measured.
    ``picture``: write the SC result picture next to each SR.
    """

    manufacturer: str = "DXR Node project"
    device_name: str = "DXR Node"
    software_version: str = analysis.ANALYSIS_VERSION
    institution_name: str | None = None
    refusal_sr: bool = True
    picture: bool = True
    reference: Any = None
    """``analysis.reference.ReferenceTables`` for the picture's BMD-vs-age chart (None: no curve)."""


@dataclass
class _Image:
    dataset: Dataset
    result: AnalysisResult
    hand: str  # "L", "R" or "U" (unknown)


@dataclass
class _Unused:
    image: _Image
    use: hd.sr.CodedConcept  # why it was not used (code)
    text: str  # one sentence


@dataclass
class _HandReport:
    hand: str
    measured: _Image
    unused: list[_Unused] = field(default_factory=list)


def build_study_outputs(
    images: Sequence[tuple[Dataset, AnalysisResult]],
    *,
    uid_seed: str,
    options: OutputOptions = OutputOptions(),
    replaces: Sequence[str] = (),
) -> list[Dataset]:
    """SR + SC per measured hand of one study, or one refusal SR.

    Parameters
    ----------
    images : sequence of (pydicom.Dataset, AnalysisResult)
        Every analysed instance of the study (pixel data included) with its result.
    uid_seed : str
        Seed for every generated UID (the node passes ``f"{study_uid}/{job_run}"``): the same
        seed gives the same SOP Instance UIDs, so re-sending never duplicates.
    options : OutputOptions
    replaces : sequence of str
        SOP Instance UIDs of SRs from an earlier run of this study (made by this node), which
        the new SRs supersede; referenced in the Predecessor Documents Sequence.

    Returns
    -------
    list of pydicom.Dataset
        For each measured hand (ordered L, R, unknown): its SR then its SC. When no hand was
        measured: one refusal SR (or nothing if ``options.refusal_sr`` is False).
    """
    if not images:
        raise ValueError("build_study_outputs needs at least one analysed image.")
    study_uids = {str(ds.StudyInstanceUID) for ds, _ in images}
    if len(study_uids) != 1:
        raise ValueError(f"All images must belong to one study; got {len(study_uids)} Study Instance UIDs.")
    entries = [_Image(ds, result, _hand_of(ds, result)) for ds, result in images if _is_image(ds)]
    if len(entries) < len(images):
        log.warning("event=outputs_non_image_skipped study=%s skipped=%d",
                    next(iter(study_uids)), len(images) - len(entries))
    if not entries:  # e.g. only a foreign SR or PDF: nothing an SR could reference as an image
        return []
    reports = _plan_reports(entries)
    outputs: list[Dataset] = []
    if not reports:
        if options.refusal_sr:
            outputs.append(_refusal_sr(entries, uid_seed=uid_seed, options=options, replaces=replaces))
        return outputs
    for instance_number, report in enumerate(reports, start=1):
        outputs.append(
            _measurement_sr(report, instance_number, uid_seed=uid_seed, options=options, replaces=replaces)
        )
        if options.picture:
            try:
                outputs.append(_picture_sc(report, instance_number, uid_seed=uid_seed, options=options))
            except Exception as exc:  # noqa: BLE001 - the SR carries the result; a picture bug must not lose it
                log.error("event=picture_failed study=%s hand=%s error=%r",
                          images[0][0].StudyInstanceUID, report.hand, f"{type(exc).__name__}: {exc}")
    return outputs


def write_dicom_outputs(
    dataset: Dataset,
    result: AnalysisResult,
    out_dir: str | Path,
    *,
    options: OutputOptions = OutputOptions(),
) -> list[Path]:
    """``dxr-node analyze --dicom-out DIR``: SR (+ SC) of one input, as ``<SOPInstanceUID>.dcm``.

    The UID seed is the input's SOP Instance UID and the analysis version, so analysing the
    same file twice overwrites the same output files.
    """
    seed = f"cli/{dataset.SOPInstanceUID}/{options.software_version}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for output in build_study_outputs([(dataset, result)], uid_seed=seed, options=options):
        path = out_dir / f"{output.SOPInstanceUID}.dcm"
        output.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# --- planning: which image each hand's report uses -------------------------------------------
def _is_image(ds: Dataset) -> bool:
    """An instance the SR can reference as an image (Image Library, SCOORD)."""
    try:
        from highdicom._standard_utils import does_iod_have_pixel_data
    except ImportError:  # private helper moved: fall back to the image attributes
        return "Rows" in ds and "Columns" in ds
    return "Rows" in ds and "Columns" in ds and does_iod_have_pixel_data(str(ds.SOPClassUID))



def _hand_of(ds: Dataset, result: AnalysisResult) -> str:
    for value in (result.laterality, ds.get("ImageLaterality"), ds.get("Laterality")):
        if value and str(value).upper() in ("L", "R"):
            return str(value).upper()
    return "U"


def _is_measured_pa(image: _Image) -> bool:
    return image.result.status == "ok" and image.result.view in ("PA", None) and image.result.bones_measured >= 2


def _rank(image: _Image) -> tuple:
    """Higher is better: more bones, then higher mean bone quality, then a stable UID order."""
    qualities = [b.quality for b in image.result.bones.values() if b.status == "ok" and b.quality is not None]
    mean_quality = float(np.mean(qualities)) if qualities else 0.0
    return (image.result.bones_measured, mean_quality, str(image.dataset.SOPInstanceUID))


def _plan_reports(entries: list[_Image]) -> list[_HandReport]:
    reports: list[_HandReport] = []
    for hand in ("L", "R", "U"):
        candidates = [e for e in entries if e.hand == hand and _is_measured_pa(e)]
        if candidates:
            reports.append(_HandReport(hand=hand, measured=max(candidates, key=_rank)))
    for report in reports:
        for entry in entries:
            if entry is report.measured:
                continue
            if entry.hand != report.hand and any(r.measured is entry for r in reports):
                report.unused.append(_Unused(entry, OTHER_HAND, f"Reported in the {_hand_words(entry.hand)} report."))
            elif _is_measured_pa(entry):
                report.unused.append(
                    _Unused(entry, NOT_BEST_IMAGE, "Another PA image of this hand gave the better measurement.")
                )
            else:
                report.unused.append(_Unused(entry, _reason_code(entry.result), _reason_text(entry.result)))
    return reports


def _reason_code(result: AnalysisResult) -> hd.sr.CodedConcept:
    if result.status == "ok":  # measured but not as a PA view
        return REASON_CODES.get(f"{result.view}_view", REASON_CODES["not_pa_hand"])
    return REASON_CODES.get(result.reason or "", UNKNOWN_REASON)


def _reason_text(result: AnalysisResult) -> str:
    if result.status == "ok":
        return REASON_MESSAGES.get(f"{result.view}_view", REASON_MESSAGES["not_pa_hand"])
    return result.message or REASON_MESSAGES.get(result.reason or "", "No measurement was made.")


def _hand_words(hand: str) -> str:
    return {"L": "left hand", "R": "right hand"}.get(hand, "hand of unknown side")


# --- UIDs ------------------------------------------------------------------------------------
def _uid(*parts: str) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _sr_series_uid(study_uid: str) -> str:
    # One SR series per study for this node, the same on every run, so that a new run's SR can
    # name its predecessors (Predecessor Documents Sequence needs their series UID).
    return _uid(study_uid, "dxr-node-sr-series")


def _sc_series_uid(study_uid: str) -> str:
    return _uid(study_uid, "dxr-node-sc-series")


# --- SR --------------------------------------------------------------------------------------
def _observation_context(options: OutputOptions) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=_uid("device", options.manufacturer, options.device_name),
        name=options.device_name,
        manufacturer_name=options.manufacturer,
        model_name=f"{options.device_name} {options.software_version}",
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def _algorithm(result: AnalysisResult) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=result.analysis_version)


def _library_image(ds: Dataset) -> Dataset:
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


def _finding_site(hand: str, anatomy=METACARPAL) -> hd.sr.FindingSite:
    return hd.sr.FindingSite(anatomic_location=anatomy, laterality=LATERALITY_CODES.get(hand))


REPORT_DECIMALS: dict[str, int] = {
    CORTICAL_THICKNESS.value: 3, OUTER_WIDTH.value: 3, VPA.value: 3, METACARPAL_INDEX.value: 4,
    MEAN_CORTICAL_THICKNESS.value: 3, MEAN_OUTER_WIDTH.value: 3, MEAN_METACARPAL_INDEX.value: 4,
    DXR_BMD.value: 4, T_SCORE.value: 2, Z_SCORE.value: 2, BHI.value: 3, POROSITY.value: 5,
}
"""Decimals each measurement is written with: finer than its precision, short enough to read
(0.001 mm is far below the ~0.02 mm precision of cortical thickness)."""


def _num(name, value: float | None, unit, **kwargs) -> hd.sr.Measurement | None:
    if value is None or not math.isfinite(float(value)):
        return None
    value = round(float(value), REPORT_DECIMALS.get(name.value, 6)) + 0.0  # + 0.0: no "-0.0"
    return hd.sr.Measurement(name=name, value=value, unit=unit, **kwargs)


def _with_comment(group, text: str):
    """Append a TEXT "Comment" (DCM 121106) to a measurement group's container."""
    container = group[0]
    item = hd.sr.TextContentItem(
        name=COMMENT, value=_clip_ut(text), relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    if "ContentSequence" not in container:
        container.ContentSequence = hd.sr.ContentSequence()
    container.ContentSequence.append(item)
    return group


_ASCII_FALLBACKS = {"\u2014": "-", "\u2013": "-", "\u2212": "-", "\u2265": ">=", "\u2264": "<=",
                    "\u00b1": "+/-", "\u00b2": "2", "\u00b7": "-", "\u2019": "'", "\u201c": '"', "\u201d": '"'}


def _fit_charset(text: str, charset) -> str:
    """``text`` as the output's Specific Character Set can carry it.

    Outputs copy the source's character set (so patient names round-trip); text this module
    adds (reference names, messages, configured names) is transliterated to ASCII when that
    set cannot encode it. No character set (the default repertoire) means ASCII.
    """
    values = [charset] if isinstance(charset, str) else list(charset or [])
    codecs = pydicom.charset.convert_encodings(values) if any(values) else ["ascii"]
    codecs = ["ascii" if c == "iso8859" else c for c in codecs]  # pydicom's lenient default
    def encodable(candidate: str) -> bool:
        for codec in codecs:
            try:
                candidate.encode(codec)
                return True
            except (UnicodeEncodeError, LookupError):
                continue
        return False

    if encodable(text):
        return text
    for char, plain in _ASCII_FALLBACKS.items():
        text = text.replace(char, plain)
    if encodable(text):
        return text
    kept = "".join(c if encodable(c) else unicodedata.normalize("NFKD", c) for c in text)
    return kept.encode("ascii", "ignore").decode("ascii") if not encodable(kept) else kept


def _fit_own_text(ds: Dataset, keywords: Sequence[str]) -> None:
    """Apply :func:`_fit_charset` to the attributes named and every TEXT content item."""
    charset = ds.get("SpecificCharacterSet")
    for keyword in keywords:
        if ds.get(keyword):
            ds[keyword].value = _fit_charset(str(ds[keyword].value), charset)
    stack = list(ds.get("ContentSequence", []))
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "TEXT" and "TextValue" in item:
            item.TextValue = _fit_charset(item.TextValue, charset)
        stack.extend(item.get("ContentSequence", []))


OWN_TEXT_ATTRIBUTES = ("Manufacturer", "InstitutionName", "ManufacturerModelName", "SoftwareVersions",
                       "SeriesDescription", "ImageComments")


def _clip_ut(text: str) -> str:
    return text if len(text) < 1024 else text[:1020] + "..."


def _bone_group(image: _Image, bone: BoneResult, hand: str, uid_seed: str):
    label = f"Metacarpal {bone.name}, {_hand_words(hand)}"
    tracking = hd.sr.TrackingIdentifier(uid=_uid(uid_seed, "tracking", hand, bone.name), identifier=label)
    algorithm = _algorithm(image.result)
    site = _finding_site(hand)
    if bone.status != "ok":
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(image.dataset)],
            finding_sites=[site],
            algorithm_id=algorithm,
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(ANALYSIS_OUTCOME, NOT_MEASURED),
                hd.sr.QualitativeEvaluation(
                    REFUSAL_REASON, REASON_CODES.get(bone.reason or "", UNKNOWN_REASON)
                ),
            ],
        )
        return _with_comment(
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
        finding_sites=[site],
        algorithm_id=algorithm,
        measurements=[m for m in measurements if m is not None],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(ANALYSIS_OUTCOME, MEASURED)],
    )
    if len(bone.roi_polygon_px) < 3:  # measured, but no region to draw: a whole-image group
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(image.dataset)], **content
        )
    # Result points are pixel centres (column, row); SCOORD puts (0, 0) at the top-left corner
    # of the top-left pixel, so centres sit at +0.5. Repeating the first point closes the ROI.
    polygon = np.asarray(bone.roi_polygon_px, dtype=np.float64) + 0.5
    # Viewers expect the region on the image: clip to its extent (0 .. columns, 0 .. rows).
    polygon[:, 0] = np.clip(polygon[:, 0], 0.0, float(image.dataset.Columns))
    polygon[:, 1] = np.clip(polygon[:, 1], 0.0, float(image.dataset.Rows))
    if not np.array_equal(polygon[0], polygon[-1]):
        polygon = np.vstack([polygon, polygon[:1]])
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=polygon,
        source_image=hd.sr.SourceImageForRegion.from_source_image(image.dataset),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **content)


def _combined_group(image: _Image, hand: str, uid_seed: str):
    result = image.result
    algorithm = _algorithm(result)
    site = _finding_site(hand, HAND)
    common: dict = {}
    score_properties = None
    if result.reference_name:
        # T- and Z-scores are standardised: mean 0, SD 1 in the reference population named here.
        score_properties = hd.sr.MeasurementProperties(
            measurement_statistical_properties=hd.sr.MeasurementStatisticalProperties(
                values=[
                    hd.sr.NumContentItem(
                        name=codes.SCT.Mean, value=0.0, unit=NO_UNITS,
                        relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES,
                    ),
                    hd.sr.NumContentItem(
                        name=codes.SCT.StandardDeviation, value=1.0, unit=NO_UNITS,
                        relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES,
                    ),
                ],
                description=_clip_ut(result.reference_name),
            )
        )
    measurements = [
        _num(DXR_BMD, result.dxr_bmd_g_cm2, G_CM2, **common),
        _num(T_SCORE, result.t_score, T_SCORE_UNIT, properties=score_properties, **common),
        _num(Z_SCORE, result.z_score, Z_SCORE_UNIT, properties=score_properties, **common),
        _num(BHI, result.bhi, NO_UNITS, **common),
        _num(POROSITY, result.porosity, NO_UNITS, **common),
        _num(MEAN_CORTICAL_THICKNESS, result.cortical_thickness_mm, MM, **common),
        _num(MEAN_OUTER_WIDTH, result.outer_width_mm, MM, **common),
        _num(MEAN_METACARPAL_INDEX, result.mci, RATIO, **common),
    ]
    evaluations = [
        hd.sr.QualitativeEvaluation(ANALYSIS_OUTCOME, MEASURED),
        hd.sr.QualitativeEvaluation(IMAGE_USE, USED_FOR_MEASUREMENT),
        hd.sr.QualitativeEvaluation(SERVICE_EXTENT, REDUCED_SERVICE if result.reduced_service else FULL_SERVICE),
    ]
    who = WHO_VALUES.get((result.who_category or "").lower())
    if who is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(WHO_CATEGORY, who))
    source = PIXEL_SPACING_SOURCES.get(result.pixel_spacing_source or "")
    if source is not None:
        evaluations.append(hd.sr.QualitativeEvaluation(PIXEL_SPACING_SOURCE, source))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_uid(uid_seed, "tracking", hand, "combined"), identifier=f"DXR-BMD, {_hand_words(hand)}"
        ),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(image.dataset)],
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
        notes.append(f"Reference population: {result.reference_name}.")
    if result.scores_omitted_reason:
        notes.append(result.scores_omitted_reason)
    elif result.t_score is None and result.z_score is None:
        notes.append("T- and Z-scores omitted: no reference population is configured.")
    notes.append("Computed estimate from a radiograph (digital X-ray radiogrammetry), not a DXA measurement.")
    return _with_comment(group, " ".join(notes))


def _unused_group(unused: _Unused, uid_seed: str, owner: str):
    ds = unused.image.dataset
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_uid(uid_seed, "tracking", owner, "unused", ds.SOPInstanceUID),
            identifier=f"Image not used ({_describe_image(ds)})",
        ),
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(IMAGE_USE, unused.use)],
    )
    return _with_comment(group, f"Image {_describe_image(ds)} not used: {unused.text}")


def _describe_image(ds: Dataset) -> str:
    parts = [f"series {ds.get('SeriesNumber', '?')} image {ds.get('InstanceNumber', '?')}"]
    view = ds.get("ViewPosition")
    if view:
        parts.append(str(view))
    return ", ".join(parts)


def _sr_dataset(
    *,
    content: hd.sr.MeasurementReport,
    evidence: list[Dataset],
    sop_instance_uid: str,
    instance_number: int,
    options: OutputOptions,
    replaces: Sequence[str],
) -> hd.sr.ComprehensiveSR:
    source = evidence[0]
    study_uid = str(source.StudyInstanceUID)
    kwargs = {}
    if "SpecificCharacterSet" in source:
        kwargs["specific_character_set"] = source.SpecificCharacterSet
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=content,
        series_instance_uid=_sr_series_uid(study_uid),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=options.manufacturer,
        institution_name=options.institution_name,
        is_complete=True,
        is_final=False,
        is_verified=False,
        performed_procedure_codes=[PROCEDURE_DXR_BMD],
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description="DXR-BMD report (computed estimate)",
        **kwargs,
    )
    _separate_containers(sr)
    sr.ManufacturerModelName = options.device_name
    sr.SoftwareVersions = options.software_version
    sr.SeriesDescription = "DXR-BMD report (computed estimate)"
    _fit_own_text(sr, OWN_TEXT_ATTRIBUTES)
    _declare_private_scheme(sr)
    if replaces:
        _add_predecessors(sr, study_uid, replaces)
    return sr


def _separate_containers(sr: Dataset) -> None:
    """Mark every CONTAINER's content SEPARATE (highdicom writes CONTINUOUS).

    The items are a list of measurements, not one running text; SEPARATE also makes renderers
    such as DCMTK dsr2html print each measurement's name next to its value.
    """
    stack = [sr]
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "CONTAINER":
            item.ContinuityOfContent = "SEPARATE"
        stack.extend(item.get("ContentSequence", []))


def _declare_private_scheme(ds: Dataset) -> None:
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "DXR Node private codes"
    item.CodingSchemeResponsibleOrganization = "DXR Node project"
    item.CodingSchemeVersion = "1"
    ds.CodingSchemeIdentificationSequence = [item]


def _add_predecessors(sr: Dataset, study_uid: str, replaces: Sequence[str]) -> None:
    referenced = []
    for uid in dict.fromkeys(replaces):
        ref = Dataset()
        ref.ReferencedSOPClassUID = COMPREHENSIVE_SR_SOP_CLASS_UID
        ref.ReferencedSOPInstanceUID = uid
        referenced.append(ref)
    series = Dataset()
    series.SeriesInstanceUID = _sr_series_uid(study_uid)
    series.ReferencedSOPSequence = referenced
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = [series]
    sr.PredecessorDocumentsSequence = [study]


def _measurement_sr(
    report: _HandReport, instance_number: int, *, uid_seed: str, options: OutputOptions, replaces: Sequence[str]
) -> Dataset:
    image = report.measured
    groups = [
        _bone_group(image, image.result.bones[name], report.hand, uid_seed)
        for name in BONE_NAMES
        if name in image.result.bones
    ]
    groups.append(_combined_group(image, report.hand, uid_seed))
    groups += [_unused_group(u, uid_seed, report.hand) for u in report.unused]
    evidence = [image.dataset] + [u.image.dataset for u in report.unused]
    return _report_sr(groups, evidence, sop_instance_uid=_uid(uid_seed, "sr", report.hand),
                      instance_number=instance_number, options=options, replaces=replaces)


def _refusal_sr(entries: list[_Image], *, uid_seed: str, options: OutputOptions, replaces: Sequence[str]) -> Dataset:
    groups = []
    for entry in entries:
        ds = entry.dataset
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=_uid(uid_seed, "tracking", "refusal", ds.SOPInstanceUID),
                identifier=f"No measurement ({_describe_image(ds)})",
            ),
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)],
            algorithm_id=_algorithm(entry.result),
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(ANALYSIS_OUTCOME, NOT_MEASURED),
                hd.sr.QualitativeEvaluation(REFUSAL_REASON, _reason_code(entry.result)),
            ],
        )
        groups.append(
            _with_comment(
                group,
                f"No DXR measurement was made on image {_describe_image(ds)}: {_reason_text(entry.result)}",
            )
        )
    evidence = [e.dataset for e in entries]
    return _report_sr(groups, evidence, sop_instance_uid=_uid(uid_seed, "sr", "refusal"),
                      instance_number=1, options=options, replaces=replaces)


def _report_sr(
    groups: list, evidence: list[Dataset], *, sop_instance_uid: str, instance_number: int,
    options: OutputOptions, replaces: Sequence[str],
) -> Dataset:
    """The TID 1500 report of ``groups`` on the ``evidence`` images, as an SR instance."""
    content = hd.sr.MeasurementReport(
        observation_context=_observation_context(options),
        procedure_reported=PROCEDURE_DXR_BMD,
        imaging_measurements=groups,
        referenced_images=[_library_image(ds) for ds in evidence],
    )
    return _sr_dataset(
        content=content,
        evidence=evidence,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        options=options,
        replaces=replaces,
    )


# --- SC --------------------------------------------------------------------------------------
def _patient_line(ds: Dataset, result: AnalysisResult):
    from node.picture import PatientLine

    date = str(ds.get("StudyDate", "") or "")
    if len(date) == 8 and date.isdigit():
        date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    age = f"{result.age_years:.0f} y" if result.age_years is not None else str(ds.get("PatientAge", "") or "")
    return PatientLine(
        name=_display_name(ds.get("PatientName")),
        patient_id=str(ds.get("PatientID", "") or ""),
        sex=str(result.sex or ds.get("PatientSex", "") or ""),
        age=age,
        study_date=date,
    )


def _display_name(name) -> str:
    """``Family, Given Middle`` as reading-room lists show it."""
    if not name:
        return ""
    name = pydicom.valuerep.PersonName(name) if not isinstance(name, pydicom.valuerep.PersonName) else name
    given = " ".join(p for p in (name.given_name, name.middle_name) if p)
    return ", ".join(p for p in (name.family_name, given) if p) or str(name)


def _reference_bands(reference: Any, sex: str | None) -> tuple[list, str | None]:
    """The reference rows for ``sex`` as ``picture.ReferenceBand``s, and why there are none.

    ``reference`` is an ``analysis.reference.ReferenceTables`` (its ``rows`` carry ``sex``,
    ``age_min``/``age_max`` in years, ``mean_g_cm2``, ``sd_g_cm2`` and ``kind``
    ``young_adult`` or ``age_matched``).
    """
    from node.picture import ReferenceBand

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


def _picture_sc(report: _HandReport, instance_number: int, *, uid_seed: str, options: OutputOptions) -> Dataset:
    from node import picture

    image = report.measured
    source = image.dataset
    bands, no_bands_reason = _reference_bands(options.reference, image.result.sex or source.get("PatientSex"))
    rgb = picture.compose_picture(
        picture.bone_bright_image(source),
        image.result,
        hand_label=_hand_words(report.hand),
        unused=[picture.UnusedImage(_describe_image(u.image.dataset), u.text) for u in report.unused],
        reference_bands=bands,
        reference_note=no_bands_reason,
        patient=_patient_line(source, image.result),
        measured_label=f"{_describe_image(source)} ({source.get('Modality', '')})",
    )
    pixels = np.asarray(rgb, dtype=np.uint8)
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
        series_instance_uid=_sc_series_uid(str(source.StudyInstanceUID)),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=_uid(uid_seed, "sc", report.hand),
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
    if options.institution_name:
        sc.InstitutionName = options.institution_name
    _fit_own_text(sc, OWN_TEXT_ATTRIBUTES)
    return sc
