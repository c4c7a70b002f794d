"""The DICOM facts the node relies on in more than one place: status codes and SOP classes.

Receive (DIMSE and STOW-RS), the default rules, the report and the exporter all read them here.
"""

from __future__ import annotations

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
