"""UID policy: every UID the report writes is derived from a seed, so a re-run never duplicates in PACS.

The node's seed is ``<installation UID>/<StudyInstanceUID>/<run>`` (node/installation.py), so a
second node or a reinstalled one makes other UIDs; ``root`` (``[outputs] uid_root``) puts the
SOP Instance and Series UIDs under an organisation's root.
"""

from __future__ import annotations

from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

__all__ = ['derived_uid', 'pdf_series_uid', 'sc_series_uid', 'sr_series_uid']


def derived_uid(*parts: str, root: str | None = None) -> str:
    # prefix None would make pydicom return a random 2.25 UUID and ignore the entropy.
    return generate_uid(prefix=f"{root}." if root else PYDICOM_ROOT_UID, entropy_srcs=[str(p) for p in parts])


def sr_series_uid(study_uid: str, installation: str = "", root: str | None = None) -> str:
    # One SR series per study for this node, the same on every run, so that a new run's SR can
    # name its predecessors (Predecessor Documents Sequence needs their series UID).
    parts = (study_uid, "dxr-node-sr-series") + ((installation,) if installation else ())
    return derived_uid(*parts, root=root)


def sc_series_uid(study_uid: str, hand: str = "L", installation: str = "", root: str | None = None) -> str:
    # One SC series per hand (Laterality is a series attribute); the left hand keeps the earlier UID.
    parts = (study_uid, "dxr-node-sc-series") + (() if hand == "L" else (hand,)) + ((installation,) if installation else ())
    return derived_uid(*parts, root=root)


def pdf_series_uid(study_uid: str, installation: str = "", root: str | None = None) -> str:
    # One PDF series per study for this node (Modality DOC), the same on every run.
    parts = (study_uid, "dxr-node-pdf-series") + ((installation,) if installation else ())
    return derived_uid(*parts, root=root)
