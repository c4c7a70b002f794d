"""What ``dxr-node screen`` analyses: files and folders, or the CR/DX instances a DICOMweb PACS lists.

An *item* is a small dict sent to a Dask worker (never pixels): ``key`` (see
:mod:`node.screen.results`), ``kind`` (``file`` or ``dicomweb``), ``source``, and for a file
``path``, ``size`` (bytes) and ``mtime_ns``; for a PACS instance the study, series and
SOP Instance UIDs and the header fields QIDO-RS returned (``PatientID``, ``StudyDate``).
The worker that analyses a PACS instance fetches it itself over WADO-RS.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["file_items", "dicomweb_items", "qido_date_range", "QIDO_PAGE", "MODALITIES"]

MODALITIES = ("CR", "DX")
"""Radiography modalities queried on the PACS (one QIDO-RS query each)."""
QIDO_PAGE = 500
"""Instances per QIDO-RS request (``limit``/``offset`` paging)."""
_QIDO_FIELDS = ("PatientID", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                "SOPClassUID", "Modality", "BodyPartExamined")


def file_items(paths: list[str]) -> list[dict[str, Any]]:
    """One item per input file (folders recursed as ``dxr-node analyze`` does), each file once.

    A missing path is still an item: its row says ``unreadable`` (``No such file``).
    """
    from node.research import expand_paths  # the same file selection as dxr-node analyze

    files, _ = expand_paths(paths)
    items: dict[str, dict[str, Any]] = {}
    for path in files:
        absolute = path.absolute()
        try:
            st = absolute.stat()
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime_ns = -1, -1
        key = f"file:{absolute}:{size}:{mtime_ns}"
        items.setdefault(key, {"key": key, "kind": "file", "source": str(path), "path": str(absolute),
                               "size": size, "mtime_ns": mtime_ns})
    return list(items.values())


def qido_date_range(since: dt.date | None, until: dt.date | None) -> str | None:
    """The DICOM range matching value for StudyDate (``YYYYMMDD-YYYYMMDD``, open ends allowed)."""
    if since is None and until is None:
        return None
    return f"{since.strftime('%Y%m%d') if since else ''}-{until.strftime('%Y%m%d') if until else ''}"


def _value(attrs: dict[str, Any], tag: str) -> str | None:
    values = attrs.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None


def _qido_pages(client: Any, filters: dict[str, str], fields: list[str]) -> Iterator[dict[str, Any]]:
    """Every instance matching ``filters``, page by page (the server may cap one answer)."""
    offset = 0
    while True:
        page = client.search_for_instances(search_filters=filters, fields=fields, offset=offset, limit=QIDO_PAGE)
        yield from page
        if len(page) < QIDO_PAGE:
            return
        offset += len(page)


def dicomweb_items(dest: Any, rules: Any, since: dt.date | None, until: dt.date | None,
                   timeout_seconds: float = 60.0) -> tuple[list[dict[str, Any]], int]:
    """The CR/DX instances of studies in ``[since, until]`` on ``dest`` that ``rules`` analyse.

    Parameters
    ----------
    dest : node.export.config.DestinationConfig
        A ``type = "dicomweb"`` entry (its url and authentication).
    rules : node.config.RulesConfig
        The node's ``[[rules.*]]``, applied to the attributes QIDO-RS returns (the keywords the
        rules name are requested with ``includefield``), exactly as to an incoming instance.
    since, until : datetime.date or None
        StudyDate range, both ends included; None = open.

    Returns
    -------
    (items, dropped) : the instances to screen (each SOP Instance UID once) and how many the
    rules left out.

    Raises
    ------
    requests.exceptions.RequestException, ValueError
        The PACS cannot be queried.
    """
    import pydicom
    from pydicom.datadict import tag_for_keyword

    from node.export.stow import make_client
    from node.receive.rules import evaluate

    client = make_client(dest, timeout_seconds)
    rule_keywords = {kw for rule in (*rules.analyse, *rules.ignore) for kw, _ in rule.conditions}
    fields = sorted(set(_QIDO_FIELDS) | {kw for kw in rule_keywords if tag_for_keyword(kw) is not None})
    dates = qido_date_range(since, until)
    items: dict[str, dict[str, Any]] = {}
    dropped = 0
    for modality in MODALITIES:
        filters = {"Modality": modality} | ({"StudyDate": dates} if dates else {})
        for attrs in _qido_pages(client, filters, fields):
            header = pydicom.Dataset.from_json(attrs)
            if not evaluate(rules, header).analyse:
                dropped += 1
                continue
            sop = _value(attrs, "00080018")
            if not sop or f"sop:{sop}" in items:
                continue
            items[f"sop:{sop}"] = {
                "key": f"sop:{sop}", "kind": "dicomweb", "source": dest.name,
                "StudyInstanceUID": _value(attrs, "0020000D"), "SeriesInstanceUID": _value(attrs, "0020000E"),
                "SOPInstanceUID": sop, "PatientID": _value(attrs, "00100020"), "StudyDate": _value(attrs, "00080020"),
            }
    return list(items.values()), dropped
