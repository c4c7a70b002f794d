"""Digital X-ray radiogrammetry: pure maths on hand radiographs.

``analyse(dataset)`` is the one entry point the node and the CLI call. This package never
imports ``node`` and never touches a socket or writes a file.
"""

from __future__ import annotations

from typing import Any

from analysis.result import ANALYSIS_VERSION, AnalysisResult, BoneResult, refused

__all__ = ["ANALYSIS_VERSION", "AnalysisResult", "BoneResult", "analyse"]


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
        Override PatientSex / PatientAge from the header.
    reference : analysis.reference.ReferenceTables, optional
        Young-adult and age-matched tables for T- and Z-scores; without it scores are omitted.
    """
    # Placeholder until the radiogrammetry engine lands: the path around it is real.
    return refused("analysis_error", "The radiogrammetry engine is not installed in this build.")
