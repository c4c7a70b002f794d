"""UID policy: every UID the report writes is derived from a seed, so a re-run never duplicates in PACS.
"""

from __future__ import annotations

from pydicom.uid import generate_uid

__all__ = ['derived_uid', 'sc_series_uid', 'sr_series_uid']


def derived_uid(*parts: str) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def sr_series_uid(study_uid: str) -> str:
    # One SR series per study for this node, the same on every run, so that a new run's SR can
    # name its predecessors (Predecessor Documents Sequence needs their series UID).
    return derived_uid(study_uid, "dxr-node-sr-series")


def sc_series_uid(study_uid: str, hand: str = "L") -> str:
    # One SC series per hand (Laterality is a series attribute); the left hand keeps the earlier UID.
    if hand == "L":
        return derived_uid(study_uid, "dxr-node-sc-series")
    return derived_uid(study_uid, "dxr-node-sc-series", hand)
