"""Query/Retrieve SCU towards a DIMSE ``[[pacs]]``: Study Root C-FIND, C-MOVE to the node's own AE.

Most PACS offer C-MOVE but not C-GET, and a C-MOVE sends the study over a new association from
the PACS to the *move destination*: the node's AE title, which the PACS must know (AE title,
host, port) as a DICOM modality. A PACS that does not know it answers 0xA801 "move destination
unknown" (or a general failure); :func:`move_study` says so in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind as FIND,
    StudyRootQueryRetrieveInformationModelGet as GET,
    StudyRootQueryRetrieveInformationModelMove as MOVE,
)

from node.export.config import DestinationConfig
from node.export.scu import associate, association_failure, scu_ae
from node.retrieve.query import RetrieveError, StudyMatch, StudyQuery, is_hand_series
from node.tls import TlsConfig

__all__ = ["find_series", "find_studies", "get_series", "has_hand_series", "move_study", "MOVE_DESTINATION_UNKNOWN"]

log = logging.getLogger("dxr.retrieve")

MOVE_DESTINATION_UNKNOWN = 0xA801
"""C-MOVE status "Refused: Move Destination unknown" (PS3.4 C.4.2.1.5)."""
_PENDING = (0xFF00, 0xFF01)
_STUDY_RETURN_KEYS = ("StudyInstanceUID", "AccessionNumber", "PatientID", "StudyDate", "ModalitiesInStudy",
                      "StudyDescription")


@contextmanager
def association(pacs: DestinationConfig, calling_ae: str, contexts: tuple[Any, ...], timeout_seconds: float,
                tls: TlsConfig | None = None) -> Iterator[Any]:
    """An association with ``pacs`` proposing ``contexts``; released afterwards.

    Raises
    ------
    RetrieveError
        The PACS cannot be reached or rejects the association.
    """
    ae: AE = scu_ae(calling_ae, timeout_seconds)
    for context in contexts:
        ae.add_requested_context(context)
    assoc, connected = associate(ae, pacs, tls)
    if not assoc.is_established:
        raise RetrieveError(f"PACS {pacs.name} ({pacs.ae_title}@{pacs.host}:{pacs.port}): "
                            f"{association_failure(assoc, connected)} (calling AE {calling_ae})")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _identifier(level: str, keys: dict[str, str], returned: tuple[str, ...]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in returned:
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _c_find(assoc: Any, pacs: DestinationConfig, ds: Dataset) -> list[Dataset]:
    """The identifiers of every pending response; a failure status is a :class:`RetrieveError`."""
    found = []
    for status, identifier in assoc.send_c_find(ds, FIND):
        if not status:  # no response within the DIMSE timeout, or the association went away
            raise RetrieveError(f"PACS {pacs.name}: no C-FIND response (timeout or association aborted)")
        code = int(status.Status)
        if code in _PENDING and identifier is not None:
            found.append(identifier)
        elif code not in _PENDING and code != 0x0000:
            raise RetrieveError(f"PACS {pacs.name}: C-FIND failed with status 0x{code:04X}"
                                + (f" ({status.ErrorComment})" if "ErrorComment" in status else ""))
    return found


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value or "").strip()


def find_studies(assoc: Any, pacs: DestinationConfig, query: StudyQuery) -> list[StudyMatch]:
    """Study Root C-FIND at STUDY level for ``query`` on an open association."""
    identifiers = _c_find(assoc, pacs, _identifier("STUDY", query.study_keys(), _STUDY_RETURN_KEYS))
    return StudyMatch.sorted_from(identifiers, _text)


def has_hand_series(assoc: Any, pacs: DestinationConfig, study_uid: str) -> bool:
    """Whether the study has a CR/DX series of the hand or wrist (series-level C-FIND)."""
    series = _c_find(assoc, pacs, _identifier("SERIES", {"StudyInstanceUID": study_uid},
                                              ("SeriesInstanceUID", "Modality", "BodyPartExamined")))
    return any(is_hand_series(_text(s, "Modality"), _text(s, "BodyPartExamined")) for s in series)


def find_series(assoc: Any, pacs: DestinationConfig, study_uid: str, modality: str) -> list[tuple[str, str]]:
    """(SeriesInstanceUID, SeriesDescription) of the study's series of ``modality`` (series-level C-FIND)."""
    series = _c_find(assoc, pacs, _identifier("SERIES", {"StudyInstanceUID": study_uid, "Modality": modality},
                                              ("SeriesInstanceUID", "SeriesDescription")))
    return [(_text(s, "SeriesInstanceUID"), _text(s, "SeriesDescription")) for s in series
            if _text(s, "SeriesInstanceUID")]


def get_series(config: Any, pacs: DestinationConfig, calling_ae: str, series: list[tuple[str, str]],
               timeout_seconds: float) -> list[Dataset]:
    """C-GET each (study, series) of SRs on one association; the received data sets, in memory.

    Raises
    ------
    RetrieveError
        The PACS cannot be reached, rejects the association or refuses C-GET.
    """
    if not series:
        return []
    from node.dicom import SR_SOP_CLASS_PREFIX, STORAGE_SOP_CLASSES

    received: list[Dataset] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.dataset)
        return 0x0000

    ae = scu_ae(calling_ae, timeout_seconds)
    ae.add_requested_context(GET)
    sr_classes = [uid for uid in STORAGE_SOP_CLASSES if uid.startswith(SR_SOP_CLASS_PREFIX)]
    for uid in sr_classes:
        ae.add_requested_context(uid)
    roles = [build_role(uid, scp_role=True) for uid in sr_classes]
    tls_args = None
    if pacs.tls and config.tls is not None:
        from node.tls import client_context
        tls_args = (client_context(config.tls), pacs.host)
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.ae_title, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)], tls_args=tls_args)
    if not assoc.is_established:
        raise RetrieveError(f"PACS {pacs.name}: {association_failure(assoc)} (C-GET, calling AE {calling_ae})")
    try:
        for study_uid, series_uid in series:
            ds = _identifier("SERIES", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}, ())
            for status, _ in assoc.send_c_get(ds, GET):
                if not status:
                    raise RetrieveError(f"PACS {pacs.name}: no C-GET response (timeout, or no C-GET support)")
                if int(status.Status) not in (*_PENDING, 0x0000, 0xB000):
                    raise RetrieveError(f"PACS {pacs.name}: C-GET failed with status 0x{int(status.Status):04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return received


def move_study(assoc: Any, pacs: DestinationConfig, study_uid: str, move_destination: str) -> tuple[int, int, int]:
    """C-MOVE one study to ``move_destination``; returns (completed, failed, warning) sub-operations.

    Raises
    ------
    RetrieveError
        The PACS refused the move (unknown destination named as such) or sent nothing.
    """
    ds = _identifier("STUDY", {"StudyInstanceUID": study_uid}, ())
    final: Dataset | None = None
    for status, _identifier_ds in assoc.send_c_move(ds, move_destination, MOVE):
        if not status:
            raise RetrieveError(f"PACS {pacs.name}: no C-MOVE response for study {study_uid} "
                                "(timeout or association aborted)")
        final = status
    assert final is not None
    code = int(final.Status)
    counts = tuple(int(final.get(k, 0) or 0) for k in ("NumberOfCompletedSuboperations",
                                                       "NumberOfFailedSuboperations",
                                                       "NumberOfWarningSuboperations"))
    completed, failed, warning = counts
    if code == MOVE_DESTINATION_UNKNOWN:
        raise RetrieveError(_refused_destination(pacs, move_destination, code))
    if code not in (0x0000, 0xB000) or (completed + warning == 0 and failed):
        comment = f" ({final.ErrorComment})" if "ErrorComment" in final else ""
        hint = "; " + _refused_destination(pacs, move_destination, code, short=True) if completed == 0 else ""
        raise RetrieveError(f"PACS {pacs.name}: C-MOVE of study {study_uid} to {move_destination} failed with status "
                            f"0x{code:04X}{comment}, {completed} sent, {failed} failed{hint}")
    return completed, failed, warning


def _refused_destination(pacs: DestinationConfig, destination: str, code: int, short: bool = False) -> str:
    advice = (f"the PACS must know the node as a move destination: add AE title {destination} with this "
              "machine's host and the node's DIMSE port to the PACS's DICOM modalities")
    if short:
        return f"most likely the PACS does not know the move destination {destination}; {advice}"
    return f"PACS {pacs.name} refused the move destination {destination} (status 0x{code:04X}): {advice}"
