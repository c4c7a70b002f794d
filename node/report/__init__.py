"""The report: the SR and SC the node sends back (code tables, planning, UIDs, charset, SR, SC, picture, overlay)."""

from node.report.build import build_study_outputs, write_dicom_outputs
from node.report.options import OutputOptions

__all__ = ["OutputOptions", "build_study_outputs", "write_dicom_outputs"]
