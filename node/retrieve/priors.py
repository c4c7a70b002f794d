"""The patient's earlier DXR results from the PACS, for the trend line (priors).

When a study is analysed, the worker asks each ``[[pacs]]`` for the patient's earlier DXR SRs:
SR series with the node's Series Description (:data:`node.dicom.SR_SERIES_DESCRIPTION`) in
the patient's other studies, whose Manufacturer is the node's (so results of every DXR node
count, this one's from before a new data_dir included). Their DXR-BMD values join the ones in
this node's outputs (:func:`node.report.history.merge_history`).

A DIMSE PACS is asked by Study Root C-FIND (study, then series level) and C-GET of those
series: the SRs come back on the worker's own association, nothing reaches the SCP. A PACS
without C-GET gives no priors (one warning in the log; the trend then uses this node's outputs
only). A DICOMweb PACS is asked by QIDO-RS and WADO-RS. Every failure costs the priors, never
the report.
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom.dataset import Dataset

from node.config import Config
from node.dicom import NODE_MANUFACTURER, SR_SERIES_DESCRIPTION
from node.export.config import DestinationConfig
from node.report.history import HistoryPoint, points_from_sr
from node.retrieve.query import RetrieveError

__all__ = ["PRIORS_TIMEOUT_SECONDS", "pacs_history"]

log = logging.getLogger("dxr.priors")

PRIORS_TIMEOUT_SECONDS = 10.0
"""Per DIMSE message or HTTP request: a slow PACS delays the report at most a few times this."""


def pacs_history(config: Config, source: Dataset) -> list[HistoryPoint]:
    """Earlier DXR results of ``source``'s patient from every ``[[pacs]]`` (other studies only), latest SR first."""
    patient_id = str(source.get("PatientID", "") or "").strip()
    if not patient_id or not config.pacs:
        return []
    issuer = str(source.get("IssuerOfPatientID", "") or "")
    study_uid = str(source.StudyInstanceUID)
    points: list[HistoryPoint] = []
    for pacs in config.pacs:
        try:
            srs = _fetch_srs(config, pacs, patient_id, study_uid)
        except (RetrieveError, OSError, ValueError) as exc:
            log.warning("event=priors_unavailable pacs=%s error=%r", pacs.name, str(exc))
            continue
        ours = [sr for sr in srs if _is_node_sr(sr, patient_id, issuer)]
        ours.sort(key=lambda sr: (str(sr.get("ContentDate", "")), str(sr.get("ContentTime", ""))), reverse=True)
        for sr in ours:
            points += points_from_sr(sr)
        log.info("event=priors_read pacs=%s srs=%d points=%d", pacs.name, len(ours), len(points))
    return points


def _is_node_sr(sr: Dataset, patient_id: str, issuer: str) -> bool:
    return (str(sr.get("Manufacturer", "")) == NODE_MANUFACTURER
            and str(sr.get("PatientID", "")).strip() == patient_id
            and str(sr.get("IssuerOfPatientID", "") or "") == issuer)


def _fetch_srs(config: Config, pacs: DestinationConfig, patient_id: str, study_uid: str) -> list[Dataset]:
    if pacs.type == "dicomweb":
        return _fetch_srs_web(pacs, patient_id, study_uid)
    return _fetch_srs_dimse(config, pacs, patient_id, study_uid)


def _fetch_srs_dimse(config: Config, pacs: DestinationConfig, patient_id: str, study_uid: str) -> list[Dataset]:
    from node.retrieve.dimse import FIND, association, find_series, find_studies, get_series
    from node.retrieve.query import StudyQuery

    calling_ae = config.export.calling_ae_title or config.node.ae_title
    with association(pacs, calling_ae, (FIND,), PRIORS_TIMEOUT_SECONDS, config.tls) as assoc:
        studies = [s for s in find_studies(assoc, pacs, StudyQuery(patient_id=patient_id)) if s.study_uid != study_uid]
        series = [(s.study_uid, uid) for s in studies for uid in find_series(assoc, pacs, s.study_uid, "SR")
                  if uid[1] == SR_SERIES_DESCRIPTION]
    return get_series(config, pacs, calling_ae, [(st, se[0]) for st, se in series], PRIORS_TIMEOUT_SECONDS)


def _fetch_srs_web(pacs: DestinationConfig, patient_id: str, study_uid: str) -> list[Dataset]:
    from node.retrieve.web import json_value, web_call, web_client

    client = web_client(pacs, PRIORS_TIMEOUT_SECONDS)
    studies = web_call(pacs, "QIDO-RS", client.search_for_studies, search_filters={"PatientID": patient_id}) or []
    found: list[Any] = []
    for study in studies:
        uid = json_value(study, "StudyInstanceUID")
        if uid == study_uid:
            continue
        for series in web_call(pacs, "QIDO-RS", client.search_for_series, study_instance_uid=uid,
                            search_filters={"Modality": "SR"}, fields=["SeriesDescription"]) or []:
            if json_value(series, "SeriesDescription") == SR_SERIES_DESCRIPTION:
                found += web_call(pacs, "WADO-RS", client.retrieve_series, uid, json_value(series, "SeriesInstanceUID"))
    return found
