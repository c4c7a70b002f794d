"""The SR's code tables: standard codes (DCM, SCT, UCUM, CPT) and the private scheme ``99DXRNODE``.

Every code is listed in ``docs/codes.md``.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.sr.codedict import codes

__all__ = ['PRIVATE_SCHEME', 'REASON_CODES', 'private_codes']

PRIVATE_SCHEME = "99DXRNODE"
"""Designator of the project's private coding scheme (declared in every SR)."""
ALGORITHM_NAME = "DXR Node radiogrammetry"


def _private(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


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
MEAN = codes.SCT.Mean  # SCT 373098007, TID 311 on DXR-BMD
STANDARD_DEVIATION = codes.SCT.StandardDeviation  # SCT 386136009


# Private codes: no standard concept exists for radiogrammetry quantities.
CORTICAL_THICKNESS = _private("DXR0001", "Metacarpal cortical thickness")
METACARPAL_INDEX = _private("DXR0002", "Metacarpal index")
VPA = _private("DXR0003", "Volume per area")
DXR_BMD = _private("DXR0004", "DXR-BMD")
T_SCORE = _private("DXR0005", "T-score")
"""No DCM T-score concept exists; LOINC's T-scores are DXA-site specific (e.g. 80946-7 "DXA Hip-L T-score
BMD"), so a DXR T-score gets the private code with the plain meaning "T-score"."""
BHI = _private("DXR0006", "Bone health index")
MEAN_CORTICAL_THICKNESS = _private("DXR0008", "Mean metacarpal cortical thickness")
MEAN_OUTER_WIDTH = _private("DXR0009", "Mean metacarpal outer width")
MEAN_METACARPAL_INDEX = _private("DXR0010", "Mean metacarpal index")
SCREENING_CATEGORY = _private("DXR0080", "DXR screening category")
SCREENING_VALUES = {
    "normal": _private("DXR0081", "DXR T-score -1.0 or above"),
    "osteopenia": _private("DXR0082", "DXR T-score between -2.5 and -1.0"),
    "osteoporosis": _private("DXR0083", "DXR T-score -2.5 or below"),
}
"""A screening category from the DXR T-score with the WHO thresholds, deliberately not the SNOMED
disorders: WHO thresholds are defined for central DXA (docs/codes.md)."""
REFERENCE_STATUS = _private("DXR0084", "Reference population status")
PROVISIONAL_REFERENCE = _private("DXR0085", "Provisional reference (model)")
SOURCED_REFERENCE = _private("DXR0086", "Published or derived reference")
BONE_MODIFIERS = {
    "II": _private("DXR0071", "Second metacarpal (index finger ray)"),
    "III": _private("DXR0072", "Third metacarpal (middle finger ray)"),
    "IV": _private("DXR0073", "Fourth metacarpal (ring finger ray)"),
}
"""Which of II-IV: the bone group's first finding site, and the topographical modifier of its second
(SCT 36455000 Metacarpal); docs/codes.md."""
PROCEDURE_NOT_PERFORMED = _private("DXR0090", "DXR-BMD analysis not performed")
"""Procedure reported of a refusal SR: nothing a billing system reads as a performed 0749T."""
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
    found += list(SCREENING_VALUES.values()) + list(BONE_MODIFIERS.values())
    unique = {code.value: code for code in found if code.scheme_designator == PRIVATE_SCHEME}
    return [unique[key] for key in sorted(unique)]
