"""The STOW-RS Store Instances handler (PS3.18 10.5): every part goes through ingest, like a C-STORE.

``POST /dicomweb/studies``, ``POST /dicomweb/studies/{StudyInstanceUID}``:
``multipart/related; type="application/dicom"``; bearer token required. Every part goes through
:func:`node.receive.ingest.ingest`, exactly like a C-STORE: header parse without pixel decoding,
the same filter rules, spool file + fsync + SQLite row, grouped into studies by
StudyInstanceUID. The answer (application/dicom+json) is sent only after every part is on disk.

STOW-RS request handling
------------------------
The body is streamed, never read whole into memory: a ``Content-Length`` over ``[http]
max_body_bytes`` gets 413 before a byte is read, and a chunked body is cut off with 413 as
soon as it passes the limit. Parts are kept in memory up to 64 MiB per request and in
temporary files beyond that while they arrive; only when the whole body has arrived and its
multipart framing is sound are the parts ingested (a few at a time, so their fsyncs overlap).
So a request that is cut short, oversized or malformed stores nothing, and every instance
that is stored is complete and fsynced before the response.

Statuses (PS3.18 Table 10.5.3-1): 200 all stored; 202 some stored, some failed; 400 bad
syntax (malformed multipart, parts that are not DICOM or are truncated); 409 nothing stored
for another reason (SOP class not supported, StudyInstanceUID differs from the URL, or a
mixture); 413 body too large; 415 not ``multipart/related; type="application/dicom"``;
401 missing or wrong token; 503 nothing stored because of a disk or database failure; 507 the
disk watermark is crossed.

Per-instance FailureReason (0008,1197) codes: the DIMSE status the C-STORE path would answer
(0xA700 out of resources, 0xA900 data set does not match its SOP class, 0xC210 cannot
understand), 0x0122 SOP class not supported, 0xC122 transfer syntax not supported, and
0xA901 (43265) StudyInstanceUID differs from the one in the URL (the code Microsoft's DICOM
service uses for the same case).

A duplicate instance (SOP Instance UID already stored, or twice in one request) is stored
once and reported in ReferencedSOPSequence, as C-STORE answers Success for it: a sender that
re-sends after a lost response must not see a failure. It is never analysed twice.
"""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from node.config import Config
from node.dicom import STATUS, STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from node.disk import DiskWatermark
from node.http import metrics
from node.http.errors import error_response
from node.http.token import authorised
from node.limits import inflated_size_problem
from node.receive.ingest import ingest
from node.receive.multipart import MultipartError, MultipartParser, content_type
from node.spool import Store

__all__ = ["DICOM_JSON", "INGEST_CONCURRENCY", "MEMORY_BUDGET_BYTES", "StowHandler"]

log = logging.getLogger("dxr.dicomweb")

DICOM_JSON = "application/dicom+json"

_STUDY_UID_MAX = 64

INGEST_CONCURRENCY = 4
"""Parts of one request ingested at the same time (each one spool write + fsync + SQLite row)."""
MEMORY_BUDGET_BYTES = 64 * 1024**2
"""Part bytes one request may hold in memory before the rest goes to temporary files."""


@dataclass
class _Part:
    index: int
    content_type: str
    path: Path | None = None
    """Temporary file holding the part, or None while it is held in ``buffer``."""
    buffer: bytearray | None = None
    size_bytes: int = 0

    def read(self) -> bytes:
        if self.path is not None:
            return self.path.read_bytes()
        return bytes(self.buffer or b"")


@dataclass
class _PartResult:
    index: int
    accepted: bool
    outcome: str
    message: str
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    failure_reason: int | None = None


class _BodyTooLarge(Exception):
    pass


@dataclass
class _StowState:
    """The parts of one request received so far: in memory up to a budget, then in temporary files.

    Small requests (the usual one to four radiographs) never touch the disk twice; a large one
    keeps at most ``MEMORY_BUDGET_BYTES`` in memory and the rest in ``tmp_dir``.
    """

    tmp_dir: Path
    default_type: str
    parts: list[_Part] = field(default_factory=list)
    in_memory_bytes: int = 0
    _fh: Any = None

    def begin(self, headers: dict[str, str]) -> None:
        ctype = headers.get("content-type", self.default_type)
        part = _Part(len(self.parts), ctype)
        self.parts.append(part)
        if self.in_memory_bytes >= MEMORY_BUDGET_BYTES:
            self._to_file(part)
        else:
            part.buffer = bytearray()

    def _to_file(self, part: _Part) -> None:
        part.path = self.tmp_dir / f".stow-{uuid.uuid4().hex}-{part.index}.tmp"
        self._fh = open(part.path, "wb")  # noqa: SIM115 (closed in end()/cleanup())
        if part.buffer:
            self._fh.write(part.buffer)
            self.in_memory_bytes -= len(part.buffer)
        part.buffer = None

    def data(self, chunk: bytes) -> None:
        part = self.parts[-1]
        part.size_bytes += len(chunk)
        if part.buffer is not None:
            part.buffer += chunk
            self.in_memory_bytes += len(chunk)
            if self.in_memory_bytes > MEMORY_BUDGET_BYTES:
                self._to_file(part)
        else:
            self._fh.write(chunk)

    def end(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def cleanup(self) -> None:
        self.end()
        for part in self.parts:
            part.buffer = None
            if part.path is not None:
                try:
                    part.path.unlink()
                except OSError:
                    pass  # never written, or tmp_dir unusable; Store.recover removes leftovers at start


def _response_dataset(results: list[_PartResult]) -> Dataset:
    ds = Dataset()
    referenced, failed = [], []
    for r in results:
        item = Dataset()
        if r.sop_class_uid:
            item.ReferencedSOPClassUID = r.sop_class_uid
        if r.sop_instance_uid:
            item.ReferencedSOPInstanceUID = r.sop_instance_uid
        if r.accepted:
            referenced.append(item)
        else:
            item.FailureReason = r.failure_reason if r.failure_reason is not None else STATUS["processing_failure"]
            failed.append(item)
    if failed:
        ds.FailedSOPSequence = failed
    if referenced:
        ds.ReferencedSOPSequence = referenced
    return ds


def _overall_status(results: list[_PartResult]) -> int:
    accepted = [r for r in results if r.accepted]
    failed = [r for r in results if not r.accepted]
    if not failed:
        return 200
    if accepted:
        return 202
    outcomes = {r.outcome for r in failed}
    if outcomes == {"no_space"}:
        return 507
    if outcomes <= {"invalid", "not_dicom"}:
        return 400
    if outcomes == {"error"}:
        return 503
    return 409


class StowHandler:
    """Receives one STOW-RS request; see the module docstring for the rules.

    Parameters
    ----------
    config, store
        The node's configuration (``[http] max_body_bytes``, the rules) and its store.
    token
        The bearer token every request must carry.
    disk
        The data disk's watermark, checked before the body is read.
    """

    def __init__(self, config: Config, store: Store, token: str, disk: DiskWatermark) -> None:
        self.config, self.store, self.token, self.disk = config, store, token, disk
        self.max_body_bytes = config.http.max_body_bytes if config.http else 0

    async def __call__(self, request: Request) -> Response:
        started = time.monotonic()
        client = request.client.host if request.client else "unknown"
        study_in_url = request.path_params.get("study_uid")
        response = await self._handle(request, client, study_in_url)
        metrics.stow_request(response.status_code)
        log.info(
            "event=stow_request client=%s study=%s status=%d seconds=%.3f",
            client, study_in_url or "-", response.status_code, time.monotonic() - started,
        )
        return response

    async def _handle(self, request: Request, client: str, study_in_url: str | None) -> Response:
        checked = self._check_request(request, client, study_in_url)
        if isinstance(checked, Response):
            return checked
        part_type, boundary = checked
        state = _StowState(self.store.tmp_dir, part_type)
        started = time.monotonic()
        try:
            received = await self._receive(request, client, state, boundary)
            if isinstance(received, Response):
                return received
            received_at = time.monotonic()
            results = await self._store_parts(state.parts, client, study_in_url)
            stored_at = time.monotonic()
        finally:
            state.cleanup()
        status = _overall_status(results)
        body = _response_dataset(results).to_json_dict()
        n_ok = sum(r.accepted for r in results)
        log.info(
            "event=stow_stored client=%s study=%s parts=%d accepted=%d failed=%d status=%d bytes=%d "
            "receive_seconds=%.3f store_seconds=%.3f",
            client, study_in_url or "-", len(results), n_ok, len(results) - n_ok, status, received,
            received_at - started, stored_at - received_at,
        )
        return JSONResponse(body, status_code=status, media_type=DICOM_JSON)

    def _check_request(self, request: Request, client: str, study_in_url: str | None) -> Response | tuple[str, str]:
        """The refusal before a byte of the body is read, or ``(part content type, boundary)``."""
        if not authorised(request.headers.get("authorization", ""), self.token):
            log.warning("event=stow_refused client=%s reason=unauthorised", client)
            return error_response(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')")
        if study_in_url is not None and (len(study_in_url) > _STUDY_UID_MAX or not _is_uid(study_in_url)):
            return error_response(400, f"the StudyInstanceUID in the URL is not a valid UID: {study_in_url[:80]!r}")
        media_type, params = content_type(request.headers.get("content-type", ""))
        part_type = params.get("type", "application/dicom").lower()
        if media_type != "multipart/related" or part_type != "application/dicom":
            return error_response(
                415,
                f'unsupported content type {request.headers.get("content-type", "(none)")!r}: '
                'send multipart/related; type="application/dicom"',
            )
        boundary = params.get("boundary")
        if not boundary:
            return error_response(400, "the multipart/related content type has no boundary parameter")
        limit = self.max_body_bytes
        length_header = request.headers.get("content-length")
        declared = None
        if length_header is not None:
            try:
                declared = int(length_header)
            except ValueError:
                return error_response(400, f"Content-Length {length_header[:40]!r} is not a number")
            if declared > limit:
                log.warning("event=stow_refused client=%s reason=too_large bytes=%d limit=%d", client, declared, limit)
                return _too_large(limit)
        disk = self.disk.check()
        if not disk.ok or (declared is not None and disk.free_bytes - 2 * declared < disk.min_free_bytes):
            # Twice the body: the temporary part files plus the spool copies.
            log.warning("event=stow_refused client=%s reason=no_space detail=%r", client, disk.message)
            return error_response(507, f"the node is refusing new data: {disk.message}")
        return part_type, boundary

    async def _receive(self, request: Request, client: str, state: _StowState, boundary: str) -> Response | int:
        """Stream the body into ``state``; the number of bytes received, or the refusal."""
        limit = self.max_body_bytes
        received = 0
        try:
            parser = MultipartParser(boundary.encode("latin-1"), state.begin, state.data, state.end)
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise _BodyTooLarge()
                if chunk:
                    parser.feed(chunk)
            parser.close()
        except _BodyTooLarge:
            log.warning("event=stow_refused client=%s reason=too_large bytes>%d limit=%d", client, limit, limit)
            return _too_large(limit)
        except MultipartError as exc:
            log.warning("event=stow_refused client=%s reason=bad_multipart detail=%r", client, str(exc))
            return error_response(400, f"malformed multipart body: {exc}; nothing was stored")
        except ClientDisconnect:
            log.warning("event=stow_refused client=%s reason=client_disconnected", client)
            return error_response(400, "the client disconnected before the body was complete; nothing was stored")
        except OSError as exc:  # a part beyond the memory budget could not be written to tmp_dir
            log.warning("event=stow_refused client=%s reason=tmp_write_failed detail=%r", client, str(exc))
            return error_response(507 if exc.errno == errno.ENOSPC else 503,
                                  f"the node cannot write the request to disk ({exc.strerror or exc}); nothing was stored")
        if not state.parts:
            return error_response(400, "the multipart body has no parts; nothing was stored")
        return received

    async def _store_parts(self, parts: list[_Part], client: str, study_in_url: str | None) -> list[_PartResult]:
        """Ingest every part, a few at a time (their fsyncs overlap); results in the parts' order."""
        limit_parallel = asyncio.Semaphore(INGEST_CONCURRENCY)

        async def store(part: _Part) -> _PartResult:
            async with limit_parallel:
                try:
                    return await run_in_threadpool(self._store_part, part, client, study_in_url)
                except Exception as exc:  # a bug costs this part a failure, not the request (as C-STORE)
                    message = f"{type(exc).__name__}: {exc}"
                    log.error("event=instance_refused calling_ae=%s source=dicomweb part=%d "
                              "reason=internal_error detail=%r", client, part.index, message)
                    metrics.instance_refused(metrics.PROTOCOL_STOW, "internal_error")
                    return _PartResult(part.index, False, "error", message,
                                       failure_reason=STATUS["processing_failure"])

        return list(await asyncio.gather(*(store(p) for p in parts)))

    def _store_part(self, part: _Part, client: str, study_in_url: str | None) -> _PartResult:
        """Check and ingest one spooled part (runs in a worker thread: it fsyncs)."""
        def refuse(outcome: str, reason: int, message: str, sop_class=None, sop_uid=None) -> _PartResult:
            metrics.instance_refused(metrics.PROTOCOL_STOW, outcome)
            log.warning(
                "event=instance_refused calling_ae=%s source=dicomweb part=%d sop=%s reason=%s detail=%r",
                client, part.index, sop_uid, outcome, message,
            )
            return _PartResult(part.index, False, outcome, message, sop_class, sop_uid, reason)

        media_type, _ = content_type(part.content_type)
        if media_type != "application/dicom":
            return refuse("not_dicom", STATUS["cannot_understand"],
                          f"part {part.index} has content type {part.content_type!r}, not application/dicom")
        data = _as_part10(part.read())
        too_large = inflated_size_problem(data, self.config.limits.max_decompressed_bytes)
        if too_large:
            return refuse("too_large", STATUS["cannot_understand"], too_large)
        try:
            header = pydicom.dcmread(io.BytesIO(data))  # parsed once: ingest() takes this data set
            sop_class = str(header.get("SOPClassUID", "") or "") or None
            sop_uid = str(header.get("SOPInstanceUID", "") or "") or None
            study_uid = str(header.get("StudyInstanceUID", "") or "") or None
            ts = str(header.file_meta.get("TransferSyntaxUID", "") or "")
        except Exception as exc:  # pydicom raises many types on garbage
            return refuse("not_dicom", STATUS["cannot_understand"],
                          f"part {part.index} is not a DICOM file ({type(exc).__name__}: {str(exc)[:200]})")
        if sop_class not in STORAGE_SOP_CLASSES:
            return refuse("sop_class_not_supported", STATUS["sop_class_not_supported"],
                          f"SOP class {sop_class} is not accepted by this node", sop_class, sop_uid)
        if ts not in TRANSFER_SYNTAXES:
            return refuse("transfer_syntax_not_supported", STATUS["transfer_syntax_not_supported"],
                          f"transfer syntax {ts or '(none)'} is not accepted by this node", sop_class, sop_uid)
        if study_in_url is not None and study_uid != study_in_url:
            return refuse("study_uid_mismatch", STATUS["study_uid_mismatch"],
                          f"StudyInstanceUID {study_uid} differs from {study_in_url} in the URL", sop_class, sop_uid)
        outcome = ingest(self.store, self.config, data, calling_ae=client, source="dicomweb", dataset=header)
        if outcome.accepted:
            metrics.instance_received(client, metrics.PROTOCOL_STOW)
            return _PartResult(part.index, True, outcome.outcome, outcome.message, sop_class,
                               outcome.sop_instance_uid or sop_uid)
        # ingest() has logged the refusal with its reason.
        metrics.instance_refused(metrics.PROTOCOL_STOW, outcome.outcome)
        return _PartResult(part.index, False, outcome.outcome, outcome.message, sop_class,
                           outcome.sop_instance_uid or sop_uid, outcome.status)


def _as_part10(data: bytes) -> bytes:
    """``data`` with the 128-byte preamble and ``DICM`` prefix, when only they are missing.

    Some clients (dicomweb-client with pydicom 3 writing an in-memory dataset) send the File
    Meta group without the preamble. The spool must hold proper Part 10 files, so the preamble
    is added; anything else is left for the parser to judge.
    """
    if data[128:132] != b"DICM" and data[:2] == b"\x02\x00":
        return bytes(128) + b"DICM" + data
    return data


def _too_large(limit: int) -> JSONResponse:
    resp = error_response(413, f"request body exceeds [http] max_body_bytes = {limit} bytes; nothing was stored",
                  max_body_bytes=limit)
    resp.headers["Connection"] = "close"
    return resp


def _is_uid(value: str) -> bool:
    parts = value.split(".")
    return all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts) and bool(value)


