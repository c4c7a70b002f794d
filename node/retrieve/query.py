"""What a retrieval asks for and what the PACS answered: :class:`StudyQuery`, :class:`StudyMatch`, :class:`RetrieveError`.

Shared by the DIMSE (C-FIND/C-MOVE, :mod:`node.retrieve.dimse`) and DICOMweb (QIDO-RS/WADO-RS,
:mod:`node.retrieve.web`) sides, the ``request`` verb and the web page.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from node.dates import user_date

__all__ = ["HAND_BODY_PARTS", "HAND_MODALITIES", "RetrieveError", "StudyMatch", "StudyQuery", "dicom_date",
           "is_hand_series"]

HAND_MODALITIES = ("CR", "DX")
"""Series modalities a patient-wide request fetches (the default ``[[rules.analyse]]``)."""
HAND_BODY_PARTS = ("HAND", "WRIST", "")
"""Series BodyPartExamined values a patient-wide request fetches ("" = not given, as the default rule)."""


class RetrieveError(Exception):
    """A retrieval that failed, with a one-line message a technologist or admin can act on."""


def dicom_date(text: str) -> str:
    """``YYYY-MM-DD`` or ``YYYYMMDD`` as a DICOM DA ``YYYYMMDD``.

    Raises
    ------
    ValueError
        Not a real date in either form (:func:`node.dates.user_date`).
    """
    return user_date(text, "--since").strftime("%Y%m%d")


@dataclass(frozen=True)
class StudyQuery:
    """One request: exactly one of ``accession``, ``study_uid``, ``patient_id``; ``since`` only with a patient."""

    accession: str | None = None
    study_uid: str | None = None
    patient_id: str | None = None
    since: str | None = None
    """DICOM date ``YYYYMMDD``: studies on or after it (patient-wide requests)."""

    def __post_init__(self) -> None:
        given = [k for k in ("accession", "study_uid", "patient_id") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of --accession, --study-uid, --patient-id")
        if self.since and not self.patient_id:
            raise ValueError("--since goes with --patient-id (a patient's studies since a date)")
        for flag, value, limit in (("--accession", self.accession, 16), ("--patient-id", self.patient_id, 64)):
            if value and (len(value) > limit or any(c in value for c in "\\*?")):
                # a wildcard would match other patients' studies: a request names one exactly
                raise ValueError(f"{flag} must be at most {limit} characters without wildcards or backslash, "
                                 f"got {value!r}")
        if self.study_uid and not re.fullmatch(r"[0-9]+(\.[0-9]+)*", self.study_uid) or len(self.study_uid or "") > 64:
            raise ValueError(f"--study-uid must be a DICOM UID (digits and dots, at most 64), got {self.study_uid!r}")

    @property
    def patient_wide(self) -> bool:
        """A patient's studies (filtered to hand/wrist CR/DX), not one named study."""
        return bool(self.patient_id)

    def describe(self) -> str:
        """The request in a few words, for messages (``accession 123``, ``patient P1 since 20200101``)."""
        if self.accession:
            return f"accession {self.accession}"
        if self.study_uid:
            return f"study {self.study_uid}"
        return f"patient {self.patient_id}" + (f" since {self.since}" if self.since else "")

    def study_keys(self) -> dict[str, str]:
        """The matching keys of a Study Root C-FIND or QIDO-RS study search (DICOM keywords)."""
        keys: dict[str, str] = {}
        if self.accession:
            keys["AccessionNumber"] = self.accession
        if self.study_uid:
            keys["StudyInstanceUID"] = self.study_uid
        if self.patient_id:
            keys["PatientID"] = self.patient_id
        if self.since:
            keys["StudyDate"] = f"{self.since}-"
        return keys


@dataclass(frozen=True)
class StudyMatch:
    """One study the PACS found (no patient name: it is never logged or printed)."""

    study_uid: str
    accession: str = ""
    patient_id: str = ""
    study_date: str = ""
    modalities: str = ""
    description: str = ""

    @classmethod
    def sorted_from(cls, found: list[Any], value: Callable[[Any, str], str]) -> list[StudyMatch]:
        """The matches in ``found`` (C-FIND identifiers or QIDO-RS JSON objects, read with
        ``value(item, keyword)``) that carry a Study Instance UID, oldest first."""
        matches = [cls(study_uid=value(i, "StudyInstanceUID"), accession=value(i, "AccessionNumber"),
                       patient_id=value(i, "PatientID"), study_date=value(i, "StudyDate"),
                       modalities=value(i, "ModalitiesInStudy"), description=value(i, "StudyDescription"))
                   for i in found if value(i, "StudyInstanceUID")]
        return sorted(matches, key=lambda m: (m.study_date, m.study_uid))

    def label(self) -> str:
        """``study <uid> (accession A, 20260102)`` for messages."""
        extra = ", ".join(x for x in (f"accession {self.accession}" if self.accession else "", self.study_date) if x)
        return f"study {self.study_uid}" + (f" ({extra})" if extra else "")


def is_hand_series(modality: str, body_part: str) -> bool:
    """A series a patient-wide request fetches: CR/DX of the hand or wrist (or no body part given)."""
    return modality.strip().upper() in HAND_MODALITIES and body_part.strip().upper() in HAND_BODY_PARTS
