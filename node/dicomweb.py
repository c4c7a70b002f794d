"""The node's HTTP side: STOW-RS receive (PS3.18 10.5), health, readiness and metrics.

An ASGI app (Starlette) served by uvicorn in a thread of ``dxr-node serve``, beside the DIMSE
listener, when the config has an ``[http]`` table:

``POST /dicomweb/studies``, ``POST /dicomweb/studies/{StudyInstanceUID}``
    Store Instances. ``multipart/related; type="application/dicom"``; bearer token required.
    Every part goes through :func:`node.ingest.ingest`, exactly like a C-STORE: header parse
    without pixel decoding, the same filter rules, spool file + fsync + SQLite row, grouped
    into studies by StudyInstanceUID. The answer (application/dicom+json) is sent only after
    every part is on disk.
``GET /healthz``
    The process is up (200).
``GET /readyz``
    200 when the spool is writable, free disk is above the watermark and SQLite answers;
    503 otherwise, with the reasons. Also shows each destination's last export state.
``GET /metrics``
    Prometheus text format (see :mod:`node.metrics`).

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
import hmac
import io
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pydicom
import uvicorn
from pydicom.dataset import Dataset
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node import metrics
from node.config import Config, ConfigError, HttpConfig
from node.disk import DiskWatermark, shared_watermark
from node.ingest import IngestOutcome, ingest
from node.store import Store

__all__ = [
    "create_app",
    "start_http_server",
    "HttpServer",
    "load_token",
    "MultipartParser",
    "MultipartError",
    "FAILURE_REASON",
]

log = logging.getLogger("dxr.dicomweb")

DICOM_JSON = "application/dicom+json"

FAILURE_REASON = {
    "out_of_resources": 0xA700,
    "dataset_mismatch": 0xA900,
    "study_uid_mismatch": 0xA901,
    "cannot_understand": 0xC210,
    "sop_class_not_supported": 0x0122,
    "transfer_syntax_not_supported": 0xC122,
    "processing_failure": 0x0110,
}
"""FailureReason (0008,1197) values used in FailedSOPSequence items."""

MAX_PART_HEADER_BYTES = 16 * 1024
"""A part's MIME header block larger than this is malformed (400)."""

_STUDY_UID_MAX = 64

INGEST_CONCURRENCY = 4
MEMORY_BUDGET_BYTES = 64 * 1024**2
"""Part bytes one request may hold in memory before the rest goes to temporary files."""
"""Parts of one request ingested at the same time (each one spool write + fsync + SQLite row)."""


# --------------------------------------------------------------------------------------------
# Token
# --------------------------------------------------------------------------------------------
def load_token(http: HttpConfig, config_path: Path | str = "config") -> str:
    """The bearer token from ``[http] token`` or ``[http] token_file`` (read once, at start).

    A ``token_file`` that does not exist yet is created (mode 0600) with a random token, so a
    first ``make run`` or a fresh container has a token the operator can read from the file.

    Raises
    ------
    ConfigError
        When neither is set, or the token file cannot be read or is empty.
    """
    if http.token:
        return http.token.strip()
    if http.token_file is None:
        raise ConfigError(
            f"{config_path}: [http] needs token or token_file: STOW-RS never accepts data without a bearer token"
        )
    token_path = Path(http.token_file)
    if not token_path.exists():
        # First start (make run, a fresh container): make a random token the operator can read.
        try:
            token_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
            log.warning("event=http_token_created path=%s hint='send it as Authorization: Bearer <token>'", token_path)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"{config_path}: [http] token_file {token_path} does not exist and cannot be created ({exc})") from None
    try:
        token = token_path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: [http] token_file {http.token_file} cannot be read ({exc})") from None
    if not token:
        raise ConfigError(f"{config_path}: [http] token_file {http.token_file} is empty")
    return token


# --------------------------------------------------------------------------------------------
# Streaming multipart/related parser
# --------------------------------------------------------------------------------------------
class MultipartError(ValueError):
    """The body is not well-formed multipart (missing boundary, bad part headers, cut short)."""


class MultipartParser:
    """Incremental multipart parser (RFC 2046) that hands out part bodies as they stream.

    Feed chunks with :meth:`feed`; it calls ``on_part_begin(headers)``, ``on_part_data(bytes)``
    (any number of times) and ``on_part_end()``. :meth:`close` checks that the closing
    delimiter was seen. Memory use is one chunk plus the delimiter length.

    Parameters
    ----------
    boundary
        The ``boundary`` parameter of the request's Content-Type (bytes).
    """

    _PREAMBLE, _HEADERS, _BODY, _DONE = range(4)

    def __init__(
        self,
        boundary: bytes,
        on_part_begin: Callable[[dict[str, str]], None],
        on_part_data: Callable[[bytes], None],
        on_part_end: Callable[[], None],
    ) -> None:
        if not boundary or len(boundary) > 200:
            raise MultipartError("the multipart boundary is missing or longer than 200 characters")
        # A CRLF is virtually prepended to the body, so the first delimiter needs no special case.
        self._delimiter = b"\r\n--" + boundary
        self._buf = bytearray(b"\r\n")
        self._state = self._PREAMBLE
        self._on_begin, self._on_data, self._on_end = on_part_begin, on_part_data, on_part_end
        self.parts = 0

    @property
    def done(self) -> bool:
        return self._state == self._DONE

    def feed(self, chunk: bytes) -> None:
        if self._state == self._DONE:
            return  # epilogue: ignored (RFC 2046)
        self._buf += chunk
        while True:
            if self._state == self._PREAMBLE or self._state == self._BODY:
                at = self._buf.find(self._delimiter)
                if at < 0:
                    # Keep enough bytes to match a delimiter split over two chunks.
                    keep = len(self._delimiter) - 1
                    if self._state == self._BODY and len(self._buf) > keep:
                        self._on_data(bytes(self._buf[:-keep]))
                        del self._buf[:-keep]
                    elif self._state == self._PREAMBLE and len(self._buf) > keep:
                        del self._buf[:-keep]
                    return
                after = at + len(self._delimiter)
                if len(self._buf) < after + 2:
                    return  # need the two bytes after the delimiter ("--" or CRLF/padding)
                if self._state == self._BODY:
                    if at:
                        self._on_data(bytes(self._buf[:at]))
                    self._on_end()
                if self._buf[after:after + 2] == b"--":
                    self._state = self._DONE
                    self._buf.clear()
                    return
                # Transport padding (spaces/tabs) may follow a delimiter before its CRLF.
                eol = self._buf.find(b"\r\n", after)
                if eol < 0:
                    if len(self._buf) - after > 1024:
                        raise MultipartError("a multipart delimiter line is not terminated by CRLF")
                    return
                if self._buf[after:eol].strip(b" \t"):
                    raise MultipartError("unexpected characters after a multipart delimiter")
                del self._buf[:eol + 2]
                self._state = self._HEADERS
            elif self._state == self._HEADERS:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0 and self._buf.startswith(b"\r\n"):
                    end = -2  # a part with no header lines at all
                if end == -1:
                    if len(self._buf) > MAX_PART_HEADER_BYTES:
                        raise MultipartError("a part's headers exceed 16 KiB")
                    return
                block = bytes(self._buf[:max(end, 0)])
                del self._buf[:end + 4]
                self._on_begin(_parse_part_headers(block))
                self.parts += 1
                self._state = self._BODY

    def close(self) -> None:
        """Raise :class:`MultipartError` unless the closing delimiter has been seen."""
        if self._state != self._DONE:
            if self._state == self._PREAMBLE:
                raise MultipartError("no multipart part with the declared boundary was found")
            raise MultipartError("the body ended before the closing multipart delimiter (truncated request)")


def _parse_part_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        raise MultipartError("a part's headers are not ASCII") from None
    for line in text.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MultipartError(f"malformed part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def _content_type(value: str) -> tuple[str, dict[str, str]]:
    """``(media type lowercased, {param: value})`` of a Content-Type header value."""
    msg = Message()
    msg["content-type"] = value
    params = msg.get_params(header="content-type") or []
    return msg.get_content_type().lower(), {k.lower(): v for k, v in params[1:]}


# --------------------------------------------------------------------------------------------
# STOW-RS
# --------------------------------------------------------------------------------------------
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


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="dxr-node"'} if status == 401 else None
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status, headers=headers)


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
            item.FailureReason = r.failure_reason if r.failure_reason is not None else FAILURE_REASON["processing_failure"]
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


class _StowHandler:
    """Receives one STOW-RS request; see the module docstring for the rules."""

    def __init__(self, app_state: AppState) -> None:
        self.s = app_state

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
        s = self.s
        if not self._authorised(request):
            log.warning("event=stow_refused client=%s reason=unauthorised", client)
            return _error(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')")
        if study_in_url is not None and (len(study_in_url) > _STUDY_UID_MAX or not _is_uid(study_in_url)):
            return _error(400, f"the StudyInstanceUID in the URL is not a valid UID: {study_in_url[:80]!r}")

        media_type, params = _content_type(request.headers.get("content-type", ""))
        part_type = params.get("type", "application/dicom").lower()
        if media_type != "multipart/related" or part_type != "application/dicom":
            return _error(
                415,
                f'unsupported content type {request.headers.get("content-type", "(none)")!r}: '
                'send multipart/related; type="application/dicom"',
            )
        boundary = params.get("boundary")
        if not boundary:
            return _error(400, "the multipart/related content type has no boundary parameter")

        limit = s.http.max_body_bytes
        length_header = request.headers.get("content-length")
        if length_header is not None:
            try:
                declared = int(length_header)
            except ValueError:
                return _error(400, f"Content-Length {length_header[:40]!r} is not a number")
            if declared > limit:
                log.warning("event=stow_refused client=%s reason=too_large bytes=%d limit=%d", client, declared, limit)
                return _too_large(limit)
        else:
            declared = None

        disk = s.disk.check()
        if not disk.ok or (declared is not None and disk.free_bytes - 2 * declared < disk.min_free_bytes):
            # Twice the body: the temporary part files plus the spool copies.
            log.warning("event=stow_refused client=%s reason=no_space detail=%r", client, disk.message)
            return _error(507, f"the node is refusing new data: {disk.message}")

        state = _StowState(s.store.tmp_dir, part_type)
        started = time.monotonic()
        received = 0
        try:
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
                return _error(400, f"malformed multipart body: {exc}; nothing was stored")
            except ClientDisconnect:
                log.warning("event=stow_refused client=%s reason=client_disconnected", client)
                return _error(400, "the client disconnected before the body was complete; nothing was stored")
            except OSError as exc:  # a part beyond the memory budget could not be written to tmp_dir
                log.warning("event=stow_refused client=%s reason=tmp_write_failed detail=%r", client, str(exc))
                return _error(507 if exc.errno == errno.ENOSPC else 503,
                              f"the node cannot write the request to disk ({exc.strerror or exc}); nothing was stored")
            if not state.parts:
                return _error(400, "the multipart body has no parts; nothing was stored")
            received_at = time.monotonic()
            # A few parts at a time: their fsyncs overlap, the response order stays the parts' order.
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
                                           failure_reason=FAILURE_REASON["processing_failure"])

            results = list(await asyncio.gather(*(store(p) for p in state.parts)))
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

    def _authorised(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return hmac.compare_digest(token.strip().encode(), self.s.token.encode())

    def _store_part(self, part: _Part, client: str, study_in_url: str | None) -> _PartResult:
        """Check and ingest one spooled part (runs in a worker thread: it fsyncs)."""
        s = self.s

        def refuse(outcome: str, reason: int, message: str, sop_class=None, sop_uid=None) -> _PartResult:
            metrics.instance_refused(metrics.PROTOCOL_STOW, outcome)
            log.warning(
                "event=instance_refused calling_ae=%s source=dicomweb part=%d sop=%s reason=%s detail=%r",
                client, part.index, sop_uid, outcome, message,
            )
            return _PartResult(part.index, False, outcome, message, sop_class, sop_uid, reason)

        media_type, _ = _content_type(part.content_type)
        if media_type != "application/dicom":
            return refuse("not_dicom", FAILURE_REASON["cannot_understand"],
                          f"part {part.index} has content type {part.content_type!r}, not application/dicom")
        data = _as_part10(part.read())
        try:
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            sop_class = str(header.get("SOPClassUID", "") or "") or None
            sop_uid = str(header.get("SOPInstanceUID", "") or "") or None
            study_uid = str(header.get("StudyInstanceUID", "") or "") or None
            ts = str(header.file_meta.get("TransferSyntaxUID", "") or "")
        except Exception as exc:  # pydicom raises many types on garbage
            return refuse("not_dicom", FAILURE_REASON["cannot_understand"],
                          f"part {part.index} is not a DICOM file ({type(exc).__name__}: {str(exc)[:200]})")
        if sop_class not in s.sop_classes:
            return refuse("sop_class_not_supported", FAILURE_REASON["sop_class_not_supported"],
                          f"SOP class {sop_class} is not accepted by this node", sop_class, sop_uid)
        if ts not in s.transfer_syntaxes:
            return refuse("transfer_syntax_not_supported", FAILURE_REASON["transfer_syntax_not_supported"],
                          f"transfer syntax {ts or '(none)'} is not accepted by this node", sop_class, sop_uid)
        if study_in_url is not None and study_uid != study_in_url:
            return refuse("study_uid_mismatch", FAILURE_REASON["study_uid_mismatch"],
                          f"StudyInstanceUID {study_uid} differs from {study_in_url} in the URL", sop_class, sop_uid)
        outcome: IngestOutcome = s.ingest(s.store, s.config, data, calling_ae=client, source="dicomweb")
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
    resp = _error(413, f"request body exceeds [http] max_body_bytes = {limit} bytes; nothing was stored",
                  max_body_bytes=limit)
    resp.headers["Connection"] = "close"
    return resp


def _is_uid(value: str) -> bool:
    parts = value.split(".")
    return all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts) and bool(value)


# --------------------------------------------------------------------------------------------
# Health, readiness, metrics
# --------------------------------------------------------------------------------------------
@dataclass
class AppState:
    """Everything the handlers need; built once by :func:`create_app`."""

    config: Config
    store: Store
    http: HttpConfig
    token: str
    disk: DiskWatermark
    registry: Any
    sop_classes: frozenset[str]
    transfer_syntaxes: frozenset[str]
    ingest: Callable[..., IngestOutcome] = ingest


def _spool_writable(store: Store) -> tuple[bool, str]:
    probe = store.tmp_dir / f".readyz-{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        return False, f"spool {store.tmp_dir} is not writable ({exc.strerror or exc})"
    # Spool files are written in tmp_dir and renamed into spool_dir: both must be writable.
    if not os.access(store.spool_dir, os.W_OK | os.X_OK):
        return False, f"spool {store.spool_dir} is not writable"
    return True, f"spool {store.spool_dir} is writable"


def _readiness(s: AppState) -> tuple[bool, dict[str, Any]]:
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    ok, msg = _spool_writable(s.store)
    checks["spool"] = {"ok": ok, "message": msg}
    if not ok:
        reasons.append(msg)
    disk = s.disk.check()
    checks["disk"] = {**disk.to_json(), "message": disk.message}
    if not disk.ok:
        reasons.append(f"refusing new data: {disk.message}")
    destinations: dict[str, Any] = {}
    try:
        snap = metrics.read_snapshot(s.config.db_path)
        checks["database"] = {"ok": True, "message": f"{s.config.db_path} answers"}
        checks["queue_depth"] = snap.queue_depth
        for dest in s.config.destinations:
            last = snap.last_export.get(dest.name)
            destinations[dest.name] = {"type": dest.type, "last_export": last,
                                       "ok": last is None or last["state"] != "failed"}
    except Exception as exc:  # sqlite3.Error, OSError: say what, never a traceback
        msg = f"database {s.config.db_path} cannot be read ({exc})"
        checks["database"] = {"ok": False, "message": msg}
        reasons.append(msg)
    checks["destinations"] = destinations
    failed = [name for name, d in destinations.items() if not d["ok"]]
    # A destination whose exports failed does not stop the node receiving (results wait in
    # the queue for `dxr-node queue retry`), so it is a warning, not unreadiness.
    warnings = [f"destination {name!r}: last export failed ({destinations[name]['last_export']['last_error']})"
                for name in failed]
    body = {"ready": not reasons, "reasons": reasons, "warnings": warnings, "checks": checks}
    return not reasons, body


def create_app(
    config: Config,
    store: Store,
    *,
    token: str | None = None,
    disk: DiskWatermark | None = None,
    ingest_fn: Callable[..., IngestOutcome] = ingest,
) -> Starlette:
    """Build the ASGI app for ``config`` (which must have an ``[http]`` table).

    Raises
    ------
    ConfigError
        When ``[http]`` is missing or no token is configured.
    """
    from node.dimse import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES  # the same acceptance as C-STORE

    if config.http is None:
        raise ConfigError(f"{config.path}: no [http] table: the HTTP server is not configured")
    disk = disk or shared_watermark(config.data_dir, config.disk.min_free_bytes)
    state = AppState(
        config=config,
        store=store,
        http=config.http,
        token=token if token is not None else load_token(config.http, config.path),
        disk=disk,
        registry=metrics.build_registry(config.db_path, [d.name for d in config.destinations], disk.check),
        sop_classes=frozenset(STORAGE_SOP_CLASSES),
        transfer_syntaxes=frozenset(str(t) for t in TRANSFER_SYNTAXES),
        ingest=ingest_fn,
    )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "ae_title": config.node.ae_title})

    async def readyz(request: Request) -> Response:
        ready, body = await run_in_threadpool(_readiness, state)
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        text = await run_in_threadpool(metrics.render, state.registry)
        return Response(text, media_type=metrics.CONTENT_TYPE)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("event=http_internal_error path=%s error=%r", request.url.path, exc, exc_info=exc)
        return _error(500, "internal error; the node log has the details")

    stow_handler = _StowHandler(state)

    async def stow(request: Request) -> Response:
        return await stow_handler(request)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/dicomweb/studies", stow, methods=["POST"]),
        Route("/dicomweb/studies/{study_uid}", stow, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: internal_error})
    app.state.dxr = state
    return app


# --------------------------------------------------------------------------------------------
# Server in a thread of `dxr-node serve`
# --------------------------------------------------------------------------------------------
class HttpServer:
    """uvicorn serving :func:`create_app` in a background thread; :meth:`stop` ends it.

    The listening socket is bound here, in the caller's thread, so a port in use raises
    ``OSError`` with the system's reason before any thread starts. uvicorn logs through the
    node's logging (one line per event), at WARNING and above.
    """

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self.host, self.port = host, port
        cfg = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
            timeout_keep_alive=30, server_header=False, log_config=None,
        )
        self._server = uvicorn.Server(cfg)
        self._thread = threading.Thread(target=self._run, name="http-server", daemon=True)
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # reported by start()
            self._error = exc

    def start(self, timeout_seconds: float = 10.0) -> HttpServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
        # without it a keep-alive response waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._thread.start()
        deadline = time.monotonic() + timeout_seconds
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise OSError(f"the HTTP server did not start on {self.host}:{self.port}"
                              + (f" ({self._error!r})" if self._error else ""))
            time.sleep(0.02)
        log.info("event=http_listening bind=%s port=%d", self.host, self.port)
        return self

    def stop(self, timeout_seconds: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_seconds)
        if self._socket is not None:
            self._socket.close()


def start_http_server(config: Config, store: Store) -> HttpServer | None:
    """Start the HTTP server when the config has ``[http]``; None otherwise.

    Raises
    ------
    ConfigError
        No token configured.
    OSError
        The port cannot be bound.
    """
    if config.http is None:
        return None
    app = create_app(config, store)
    return HttpServer(app, config.http.bind, config.http.port).start()
