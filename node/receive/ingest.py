"""Ingest: check, filter and durably spool one received instance, for C-STORE and STOW-RS alike.

:func:`ingest` takes one encoded instance (DICOM File Format bytes: preamble, ``DICM``, File
Meta, data set) and either spools it durably or refuses it, never decoding pixel data. The
caller answers its peer from the returned :class:`IngestOutcome` (a DIMSE status; the
DICOMweb server maps ``outcome`` to HTTP codes).
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import UID

from node.config import Config
from node.dicom import STATUS
from node.disk import shared_watermark
from node.limits import inflated_size_problem, pixel_size_problem
from node.receive.rules import evaluate
from node.spool import Store, StoreError
from node.spool.files import byte_size

__all__ = ["IngestOutcome", "ingest", "instance_problem", "parse_header"]

log = logging.getLogger("dxr.receive")

@dataclass(frozen=True)
class IngestOutcome:
    outcome: str
    """``stored``, ``reopened`` (stored; its study runs again), ``duplicate`` (already stored),
    ``dropped`` (filtered out by the rules), ``invalid`` (refused: bad data), ``no_space``
    (refused: disk watermark), ``error`` (refused: disk or database failure)."""
    status: int
    """DIMSE status to answer."""
    message: str
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == STATUS["success"]


DEFER_BYTES = 1 << 20
"""Values larger than this (the pixel data) are not read when the header is parsed: only their
length is checked, which saves a copy of the image per received instance."""


def parse_header(data: bytes | memoryview | Path) -> pydicom.Dataset:
    """Parse everything but the pixel data's meaning (the bytes are kept, never decoded; values
    over ``DEFER_BYTES`` are read only when asked for, from ``data``: bytes or a file)."""
    source = str(data) if isinstance(data, Path) else io.BytesIO(data)
    ds = pydicom.dcmread(source, force=True, defer_size=DEFER_BYTES)
    elem = ds.get_item("PixelData", keep_deferred=True) if "PixelData" in ds else None
    available = byte_size(data) - elem.value_tell if _deferred(elem) else 0
    if _deferred(elem) and available < elem.length:
        # Cut short inside the pixel data: the length that did arrive, for the length check to see.
        ds._dict[elem.tag] = elem._replace(length=max(available, 0))
    return ds


def _deferred(elem) -> bool:
    """A raw element whose value was not read (its length is known and defined)."""
    return (elem is not None and getattr(elem, "value", True) is None
            and getattr(elem, "length", 0xFFFFFFFF) != 0xFFFFFFFF)


def _value_length(ds: pydicom.Dataset, keyword: str) -> int:
    """Length in bytes of an element's value, without reading a deferred one."""
    elem = ds.get_item(keyword, keep_deferred=True)
    return int(elem.length) if _deferred(elem) else len(ds[keyword].value)


def _pixel_length_problem(ds: pydicom.Dataset) -> str | None:
    """Why the native pixel data cannot match its header, or None (compressed data: not checked here)."""
    if "PixelData" not in ds:
        return None
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is not None and UID(ts).is_compressed:
        return None
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        return f"the image header is incomplete ({exc})"
    expected = math.ceil(rows * cols * spp * frames * bits / 8)
    actual = _value_length(ds, "PixelData")
    if actual not in (expected, expected + 1):
        return f"pixel data holds {actual} bytes but Rows x Columns x bits needs {expected}"
    return None


def _disk_refusal(store: Store, config: Config) -> str | None:
    """Why new data is refused for lack of disk space, or None ([disk] min_free_bytes = 0: never)."""
    if not config.disk.min_free_bytes:
        return None
    state = shared_watermark(store.data_dir, config.disk.min_free_bytes).check()
    return None if state.ok else state.message


def instance_problem(ds: pydicom.Dataset, *, check_pixels: bool = True) -> tuple[str, str] | None:
    """Why the receiver refuses this data set, as ``(reason_code, message)``, or None.

    Without ``check_pixels`` only the identifying UIDs are checked (enough to store or drop it).
    """
    for keyword, reason in (
        ("SOPInstanceUID", "missing_sop_instance_uid"),
        ("StudyInstanceUID", "missing_study_instance_uid"),
        ("SOPClassUID", "missing_sop_class_uid"),
    ):
        try:
            value = str(ds.get(keyword, "") or "").strip()
        except Exception:
            value = ""
        if not value:
            return reason, f"the data set has no {keyword}"
    if check_pixels:
        try:
            if "PixelData" not in ds:
                return "no_pixel_data", "the image has no PixelData (truncated or not an image)"
            problem = _pixel_length_problem(ds)
        except Exception as exc:  # a corrupt element (bad VR, bad transfer syntax UID) in the image header
            return "malformed_header", f"the image header cannot be read ({type(exc).__name__}: {exc})"
        if problem:
            return "bad_pixel_data", problem
    return None


@dataclass(frozen=True)
class _Receipt:
    """Who sent an instance, and the UIDs its request named: what every log line about it carries."""

    calling_ae: str
    source: str
    request_sop_instance_uid: str | None
    request_sop_class_uid: str | None

    @property
    def who(self) -> str:
        return f"calling_ae={self.calling_ae} source={self.source}"

    def invalid(self, reason: str, message: str, sop_uid: str = "", study_uid: str = "",
                status: int = STATUS["dataset_mismatch"]) -> IngestOutcome:
        """Log and return a refusal for bad data."""
        sop = sop_uid or self.request_sop_instance_uid
        log.warning("event=instance_refused %s sop=%s study=%s reason=%s detail=%r",
                    self.who, sop, study_uid, reason, message)
        return IngestOutcome("invalid", status, message, sop, study_uid or None)


def ingest(
    store: Store,
    config: Config,
    data: bytes | memoryview | Path,
    *,
    calling_ae: str,
    source: str = "dimse",
    request_sop_instance_uid: str | None = None,
    request_sop_class_uid: str | None = None,
    dataset: pydicom.Dataset | None = None,
) -> IngestOutcome:
    """Check, filter and durably spool one received instance; log one line about it.

    Parameters
    ----------
    data
        The instance in DICOM File Format: bytes, or for C-STORE the file it was received into
        (in the store's tmp folder; moved into the spool when stored, else left for its writer
        to remove).
    calling_ae
        Who sent it (logged and recorded). For STOW-RS pass the client's name or address.
    request_sop_instance_uid, request_sop_class_uid
        The UIDs from the C-STORE request, when there is one (checked against the data set).
    dataset
        ``data`` already parsed by the caller (STOW-RS: parsed once, after its own size check).
    """
    receipt = _Receipt(calling_ae, source, request_sop_instance_uid, request_sop_class_uid)
    # Disk watermark first: refusing costs nothing and keeps the database writable.
    refusal = _disk_refusal(store, config)
    if refusal:
        log.warning("event=instance_refused %s sop=%s reason=no_space detail=%r",
                    receipt.who, request_sop_instance_uid, refusal)
        return IngestOutcome("no_space", STATUS["out_of_resources"], refusal, request_sop_instance_uid)
    if dataset is not None:
        return _ingest_dataset(store, config, data, dataset, receipt)
    too_large = inflated_size_problem(data, config.limits.max_decompressed_bytes)
    if too_large:
        return receipt.invalid("too_large", too_large, status=STATUS["cannot_understand"])
    try:
        ds = parse_header(data)
    except Exception as exc:  # pydicom raises many types on garbage; the peer gets a status, we keep serving
        msg = f"the data set cannot be parsed ({type(exc).__name__}: {exc})"
        log.warning("event=instance_refused %s sop=%s reason=unparseable detail=%r",
                    receipt.who, request_sop_instance_uid, msg)
        return IngestOutcome("invalid", STATUS["cannot_understand"], msg, request_sop_instance_uid)
    return _ingest_dataset(store, config, data, ds, receipt)


def _ingest_dataset(store: Store, config: Config, data: bytes | memoryview | Path, ds: pydicom.Dataset,
                    receipt: _Receipt) -> IngestOutcome:
    """The checks after parsing: UIDs against the request, the rules, the pixel data; then spool."""
    try:
        sop_uid = str(ds.get("SOPInstanceUID", "") or "").strip()
        study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
        series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip() or None
        sop_class = str(ds.get("SOPClassUID", "") or "").strip() or None
    except Exception as exc:
        return receipt.invalid("bad_uids", f"the UIDs cannot be read ({exc})", status=STATUS["cannot_understand"])
    requested_sop, requested_class = receipt.request_sop_instance_uid, receipt.request_sop_class_uid
    if sop_uid and requested_sop and sop_uid != requested_sop:
        return receipt.invalid("uid_mismatch", f"SOPInstanceUID {sop_uid} differs from the request's {requested_sop}",
                               sop_uid, study_uid)
    if sop_class and requested_class and sop_class != requested_class:
        return receipt.invalid("sop_class_mismatch",
                               f"SOPClassUID {sop_class} differs from the request's {requested_class}",
                               sop_uid, study_uid)
    problem = instance_problem(ds, check_pixels=False)
    if problem:
        return receipt.invalid(*problem, sop_uid, study_uid)
    try:
        decision = evaluate(config.rules, ds)
        modality = str(ds.get("Modality", "") or "")
    except Exception as exc:
        return receipt.invalid("malformed_header", f"the header cannot be read ({type(exc).__name__}: {exc})",
                               sop_uid, study_uid, STATUS["cannot_understand"])
    if not decision.analyse:
        log.info("event=instance_dropped %s sop=%s study=%s why=%r", receipt.who, sop_uid, study_uid, decision.reason)
        return IngestOutcome("dropped", STATUS["success"], decision.reason, sop_uid, study_uid)
    too_large = pixel_size_problem(ds, config.limits.max_pixel_bytes)
    if too_large:
        return receipt.invalid("too_large", too_large, sop_uid, study_uid, STATUS["cannot_understand"])
    problem = instance_problem(ds, check_pixels=True)
    if problem:
        return receipt.invalid(*problem, sop_uid, study_uid)
    try:
        meta = getattr(ds, "file_meta", None)
        ts = meta.get("TransferSyntaxUID") if meta is not None else None
    except Exception:
        ts = None
    ids = dict(sop_instance_uid=sop_uid, study_instance_uid=study_uid, series_instance_uid=series_uid,
               sop_class_uid=sop_class, transfer_syntax_uid=str(ts) if ts else None)
    return _spool(store, data, ids, modality, receipt, config.study.on_changed_duplicate)


def _spool(store: Store, data: bytes | memoryview | Path, ids: dict[str, str | None], modality: str,
           receipt: _Receipt, on_changed: str) -> IngestOutcome:
    """Write the instance to the spool and its row to SQLite; log and return the outcome."""
    sop_uid, study_uid = ids["sop_instance_uid"], ids["study_instance_uid"]
    size = byte_size(data)  # before a received file is moved into the spool
    try:
        result = store.store_instance(data, **ids, calling_ae=receipt.calling_ae, source=receipt.source,
                                      on_changed=on_changed)
    except StoreError as exc:
        log.error("event=instance_refused %s sop=%s study=%s reason=store_error detail=%r",
                  receipt.who, sop_uid, study_uid, str(exc))
        return IngestOutcome("error", STATUS["out_of_resources"], str(exc), sop_uid, study_uid)
    if result == "duplicate":
        log.info("event=instance_duplicate %s sop=%s study=%s", receipt.who, sop_uid, study_uid)
        return IngestOutcome("duplicate", STATUS["success"], "already stored", sop_uid, study_uid)
    if result in ("kept", "rejected"):
        log.warning("event=instance_changed_duplicate %s sop=%s study=%s policy=%s", receipt.who, sop_uid,
                    study_uid, "keep" if result == "kept" else "reject")
        if result == "kept":
            return IngestOutcome("duplicate", STATUS["success"], "already stored (first version kept)", sop_uid,
                                 study_uid)
        return IngestOutcome("duplicate_changed", STATUS["duplicate_sop_instance"],
                             "this SOP Instance UID is stored with other content", sop_uid, study_uid)
    log.info(
        "event=instance_stored %s sop=%s study=%s modality=%s bytes=%d%s",
        receipt.who, sop_uid, study_uid, modality, size,
        {"reopened": " study_reopened=1", "replaced": " replaced_changed_duplicate=1 study_reopened=1"}.get(result, ""),
    )
    outcome = "reopened" if result == "replaced" else result
    return IngestOutcome(outcome, STATUS["success"], "stored", sop_uid, study_uid)
