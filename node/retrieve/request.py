"""Retrieve studies from a ``[[pacs]]`` on request: find them, then have them sent to the node.

One function, :func:`request_studies`, used by ``dxr-node request`` and the web page's
"analyse an earlier study" form. A DIMSE PACS gets a Study Root C-FIND, then one C-MOVE per
study to the node's own AE title: the PACS opens an association to the node's Storage SCP, so
the node must be running and known to the PACS. A DICOMweb PACS gets QIDO-RS, then WADO-RS,
and the instances are ingested here as STOW-RS instances are. Either way the study then takes
the normal path: rules, quiet period, job, outputs, exports.

A patient-wide request fetches only the studies with a CR/DX hand or wrist series.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from node.config import Config
from node.export.config import DestinationConfig
from node.retrieve.query import RetrieveError, StudyMatch, StudyQuery

__all__ = ["Retrieved", "request_studies", "DEFAULT_TIMEOUT_SECONDS"]

log = logging.getLogger("dxr.retrieve")

DEFAULT_TIMEOUT_SECONDS = 30.0
"""Per DIMSE message or HTTP request (a C-MOVE waits for each pending response, not the whole study)."""


@dataclass(frozen=True)
class Retrieved:
    """One study fetched: how many instances the PACS sent (or the node ingested) and how many failed."""

    study: StudyMatch
    sent: int
    failed: int

    def line(self) -> str:
        return f"{self.study.label()}: {self.sent} instance(s) retrieved" + (f", {self.failed} failed" if self.failed else "")


def request_studies(config: Config, pacs: DestinationConfig, query: StudyQuery, *, store: Any = None,
                    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> list[Retrieved]:
    """Find the studies ``query`` names on ``pacs`` and retrieve each to the node.

    ``store`` (a :class:`node.spool.Store`) is needed for a DICOMweb PACS only (WADO-RS instances
    are ingested by the caller's process); a DIMSE PACS sends to the running node's SCP.

    Raises
    ------
    RetrieveError
        The PACS cannot be reached, finds nothing, or refuses the move; one line.
    """
    calling_ae = config.export.calling_ae_title or config.node.ae_title
    log.info("event=retrieve_requested pacs=%s query=%r", pacs.name, query.describe())
    if pacs.type == "dicomweb":
        done = _request_web(config, pacs, query, store, timeout_seconds)
    else:
        done = _request_dimse(config, pacs, query, calling_ae, timeout_seconds)
    for item in done:
        log.info("event=study_retrieved pacs=%s study=%s sent=%d failed=%d", pacs.name, item.study.study_uid,
                 item.sent, item.failed)
    return done


def _nothing_found(pacs: DestinationConfig, query: StudyQuery) -> RetrieveError:
    what = "hand/wrist CR/DX study" if query.patient_wide else "study"
    return RetrieveError(f"PACS {pacs.name} has no {what} for {query.describe()}")


def _request_dimse(config: Config, pacs: DestinationConfig, query: StudyQuery, calling_ae: str,
                   timeout_seconds: float) -> list[Retrieved]:
    from node.retrieve.dimse import FIND, MOVE, association, find_studies, has_hand_series, move_study

    with association(pacs, calling_ae, (FIND,), timeout_seconds, config.tls) as assoc:
        studies = find_studies(assoc, pacs, query)
        if query.patient_wide:
            studies = [s for s in studies if has_hand_series(assoc, pacs, s.study_uid)]
    if not studies:
        raise _nothing_found(pacs, query)
    done = []
    with association(pacs, calling_ae, (MOVE,), timeout_seconds, config.tls) as assoc:
        for study in studies:
            completed, failed, warning = move_study(assoc, pacs, study.study_uid, config.node.ae_title)
            done.append(Retrieved(study, completed + warning, failed))
    return done


def _request_web(config: Config, pacs: DestinationConfig, query: StudyQuery, store: Any,
                 timeout_seconds: float) -> list[Retrieved]:
    from node.retrieve.web import find_studies_web, has_hand_series_web, retrieve_study_web

    if store is None:
        raise RetrieveError("a DICOMweb retrieval needs the node's database (internal error: no store given)")
    studies = find_studies_web(pacs, query, timeout_seconds)
    if query.patient_wide:
        studies = [s for s in studies if has_hand_series_web(pacs, s.study_uid, timeout_seconds)]
    if not studies:
        raise _nothing_found(pacs, query)
    return [Retrieved(s, *retrieve_study_web(config, store, pacs, s.study_uid, timeout_seconds)) for s in studies]
