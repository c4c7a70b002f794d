"""Query/Retrieve from a DICOMweb ``[[pacs]]``: QIDO-RS searches, WADO-RS study retrieval.

The retrieved instances go through the same ingest as STOW-RS (:func:`node.receive.ingest.ingest`,
``source = "dicomweb"``, calling AE = the PACS's name): rules, checks, spool, SQLite row. The
running node's assembler then completes the study after the quiet period.
"""

from __future__ import annotations

import io
from typing import Any

import pydicom
import requests

from node.config import Config
from node.export.config import DestinationConfig
from node.export.stow import make_client
from node.retrieve.query import RetrieveError, StudyMatch, StudyQuery, is_hand_series

__all__ = ["find_studies_web", "has_hand_series_web", "json_value", "retrieve_study_web", "web_call", "web_client"]

_TAGS = {"StudyInstanceUID": "0020000D", "AccessionNumber": "00080050", "PatientID": "00100020",
         "StudyDate": "00080020", "ModalitiesInStudy": "00080061", "StudyDescription": "00081030",
         "Modality": "00080060", "BodyPartExamined": "00180015", "SeriesInstanceUID": "0020000E",
         "SeriesDescription": "0008103E"}


def json_value(item: dict[str, Any], keyword: str) -> str:
    """A DICOM JSON attribute's values (``keyword`` among the few this module asks for), ``\\``-joined."""
    values = item.get(_TAGS[keyword], {}).get("Value", [])
    return "\\".join(str(v) for v in values)


def web_client(pacs: DestinationConfig, timeout_seconds: float) -> Any:
    """A dicomweb-client for the PACS (its auth); a bad token file is a :class:`RetrieveError`."""
    try:
        return make_client(pacs, timeout_seconds)
    except ValueError as exc:
        raise RetrieveError(f"PACS {pacs.name}: {exc}") from None


def web_call(pacs: DestinationConfig, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with HTTP and connection errors as one-line :class:`RetrieveError` s."""
    try:
        return fn(*args, **kwargs)
    except requests.exceptions.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else "?"
        raise RetrieveError(f"PACS {pacs.name} ({pacs.url}): {what} answered HTTP {code}") from None
    except requests.exceptions.RequestException as exc:
        raise RetrieveError(f"PACS {pacs.name} ({pacs.url}): {what} failed ({type(exc).__name__})") from None


def find_studies_web(pacs: DestinationConfig, query: StudyQuery, timeout_seconds: float) -> list[StudyMatch]:
    """QIDO-RS ``GET {url}/studies`` with the query's keys."""
    client = web_client(pacs, timeout_seconds)
    found = web_call(pacs, "QIDO-RS", client.search_for_studies, search_filters=query.study_keys(),
                  fields=list(_TAGS)[:6]) or []
    matches = [StudyMatch(study_uid=json_value(i, "StudyInstanceUID"), accession=json_value(i, "AccessionNumber"),
                          patient_id=json_value(i, "PatientID"), study_date=json_value(i, "StudyDate"),
                          modalities=json_value(i, "ModalitiesInStudy"), description=json_value(i, "StudyDescription"))
               for i in found if json_value(i, "StudyInstanceUID")]
    return sorted(matches, key=lambda m: (m.study_date, m.study_uid))


def has_hand_series_web(pacs: DestinationConfig, study_uid: str, timeout_seconds: float) -> bool:
    """Whether the study has a CR/DX hand or wrist series (QIDO-RS series search)."""
    client = web_client(pacs, timeout_seconds)
    series = web_call(pacs, "QIDO-RS", client.search_for_series, study_instance_uid=study_uid,
                   fields=["Modality", "BodyPartExamined"]) or []
    return any(is_hand_series(json_value(s, "Modality"), json_value(s, "BodyPartExamined")) for s in series)


def retrieve_study_web(config: Config, store: Any, pacs: DestinationConfig, study_uid: str,
                       timeout_seconds: float) -> tuple[int, int]:
    """WADO-RS the study and ingest every instance; returns (stored or already there, refused or dropped)."""
    from node.receive.ingest import ingest  # the receive side: only when a DICOMweb retrieval runs

    client = web_client(pacs, timeout_seconds)
    datasets = web_call(pacs, "WADO-RS", client.retrieve_study, study_uid)
    taken = refused = 0
    for ds in datasets:
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        outcome = ingest(store, config, buf.getvalue(), calling_ae=pacs.name, source="dicomweb")
        if outcome.outcome in ("stored", "reopened", "duplicate", "replaced", "kept"):
            taken += 1
        else:
            refused += 1
    return taken, refused
