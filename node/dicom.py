"""The DICOM facts the node relies on in more than one place: status codes, SOP classes, and
how its own SR reads back.

Receive (DIMSE and STOW-RS), the default rules, the report and the exporter all read them here;
the trend (:mod:`node.report.history`) and the web page (:mod:`node.web.results`) read the
node's SR measurement groups with :func:`sr_groups`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

__all__ = [
    "COMPREHENSIVE_SR",
    "ENCAPSULATED_PDF",
    "NODE_MANUFACTURER",
    "SR_SERIES_DESCRIPTION",
    "SC_SOP_CLASS_PREFIX",
    "SR_SOP_CLASS_PREFIX",
    "STATUS",
    "STORAGE_SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "output_kind",
    "SRGroup",
    "sr_groups",
    "sr_bone",
    "sr_hand",
]

STATUS: dict[str, int] = {
    "success": 0x0000,
    "processing_failure": 0x0110,
    "duplicate_sop_instance": 0x0111,
    "sop_class_not_supported": 0x0122,
    "out_of_resources": 0xA700,
    "dataset_mismatch": 0xA900,
    "study_uid_mismatch": 0xA901,
    "transfer_syntax_not_supported": 0xC122,
    "cannot_understand": 0xC210,
}
"""DIMSE status codes the node answers (PS3.4 B.2.3, PS3.7 C.4), also STOW-RS FailureReason
(0008,1197) values (PS3.18 Table 10.5.3-1). 0xA901: StudyInstanceUID differs from the one in
the STOW-RS URL (the code Microsoft's DICOM service uses for the same case)."""

SR_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
"""Every Structured Report storage SOP class starts with this."""
SC_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
"""Every Secondary Capture storage SOP class starts with this."""
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
"""The SOP class of the node's SRs."""
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
"""Encapsulated PDF Storage: the node's PDF report."""

NODE_MANUFACTURER = "DXR Node project"
"""Manufacturer (0008,0070) of every object the node writes; the default rules ignore it on input."""
SR_SERIES_DESCRIPTION = "DXR-BMD report (computed estimate)"
"""Series Description of the node's SR series (priors are found by it on a PACS)."""

STORAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "ComputedRadiographyImageStorage",
    "1.2.840.10008.5.1.4.1.1.1.1": "DigitalXRayImageStorageForPresentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DigitalXRayImageStorageForProcessing",
    "1.2.840.10008.5.1.4.1.1.7": "SecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.7.1": "MultiFrameSingleBitSecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.7.2": "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.7.3": "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.7.4": "MultiFrameTrueColorSecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.88.11": "BasicTextSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.22": "EnhancedSRStorage",
    COMPREHENSIVE_SR: "ComprehensiveSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive3DSRStorage",
}
"""SOP classes the node accepts (C-STORE and STOW-RS): CR, DX (presentation and processing), SC and SR."""

TRANSFER_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
]
"""Accepted as received, never transcoded; the worker decodes with pylibjpeg (libjpeg: JPEG and JPEG-LS, the
usual dcm4chee archive compression; openjpeg: JPEG 2000)."""


def output_kind(sop_class_uid: str) -> str:
    """``SR``, ``SC``, ``PDF`` or ``other``: how the queue labels an output of this SOP class."""
    if sop_class_uid == ENCAPSULATED_PDF:
        return "PDF"
    if sop_class_uid.startswith(SR_SOP_CLASS_PREFIX):
        return "SR"
    if sop_class_uid.startswith(SC_SOP_CLASS_PREFIX):
        return "SC"
    return "other"


TRACKING_IDENTIFIER = "112039"
"""DCM Tracking Identifier: the TEXT naming each measurement group ("DXR-BMD, left hand", "Metacarpal II, ...")."""


@dataclass
class SRGroup:
    """One measurement group of a node SR as read back (codes as ``(CodeValue, CodingSchemeDesignator)``)."""

    identifier: str = ""
    """The group's tracking identifier ("" when it has none)."""
    numbers: dict[tuple[str, str], float] = field(default_factory=dict)
    """NUM items: concept name -> value (the units the SR gives)."""
    meanings: dict[tuple[str, str], str] = field(default_factory=dict)
    """CODE items: concept name -> the coded value's meaning."""


def sr_groups(sr: Any) -> Iterator[SRGroup]:
    """The measurement groups (the CONTAINERs one level under the document root's items) of a node SR."""
    for top in sr.get("ContentSequence", []):
        for container in top.get("ContentSequence", []):
            if container.get("ValueType") != "CONTAINER":
                continue
            group = SRGroup()
            for item in container.get("ContentSequence", []):
                if "ConceptNameCodeSequence" not in item:
                    continue
                name = item.ConceptNameCodeSequence[0]
                key, kind = (str(name.CodeValue), str(name.CodingSchemeDesignator)), item.get("ValueType")
                if kind == "TEXT" and key[0] == TRACKING_IDENTIFIER:
                    group.identifier = str(item.TextValue)
                elif kind == "NUM" and "MeasuredValueSequence" in item:
                    group.numbers[key] = float(item.MeasuredValueSequence[0].NumericValue)
                elif kind == "CODE" and "ConceptCodeSequence" in item:
                    group.meanings[key] = str(item.ConceptCodeSequence[0].CodeMeaning)
            yield group


def sr_hand(identifier: str) -> str:
    """``L``, ``R`` or ``U`` from a group's tracking identifier ("DXR-BMD, left hand")."""
    return "L" if "left" in identifier else "R" if "right" in identifier else "U"


def sr_bone(identifier: str) -> str:
    """``II`` from a group's tracking identifier ``Metacarpal II, left hand``; "" for other groups."""
    return identifier.split(",")[0].split()[-1] if identifier.startswith("Metacarpal") else ""
