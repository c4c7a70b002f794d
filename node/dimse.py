"""DIMSE: the Storage/Verification SCP with its allow-list, and the SCU used for echo and export.

The C-STORE handler only writes bytes: ``event.encoded_dataset()`` goes to
:func:`node.ingest.ingest` (header parse without pixel decoding, filter, spool with fsync,
SQLite row) and the answer is sent only after that returns. Analysis happens elsewhere,
in worker processes.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
    UID,
)
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification

from node import metrics
from node.config import Config, DestinationConfig
from node.ingest import ingest
from node.store import Store

__all__ = ["STORAGE_SOP_CLASSES", "TRANSFER_SYNTAXES", "start_scp", "echo", "send_files", "SendResult"]

log = logging.getLogger("dxr.dimse")

# Receive path: no per-PDU debug handlers (they cost time on every fragment).
_config.LOG_HANDLER_LEVEL = "none"

STORAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "ComputedRadiographyImageStorage",
    "1.2.840.10008.5.1.4.1.1.1.1": "DigitalXRayImageStorageForPresentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DigitalXRayImageStorageForProcessing",
    "1.2.840.10008.5.1.4.1.1.7": "SecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.7.1": "MultiFrameSingleBitSecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.7.2": "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.7.3": "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.7.4": "MultiFrameTrueColorSecondaryCaptureImageStorage",
    "1.2.840.10008.5.1.4.1.1.88.11": "BasicTextSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.22": "EnhancedSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.33": "ComprehensiveSRStorage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive3DSRStorage",
}
"""SOP classes the SCP accepts: CR, DX (presentation and processing), SC and SR."""

TRANSFER_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
"""Accepted as received, never transcoded; the worker decodes with pylibjpeg/openjpeg."""


# ------------------------------------------------------------------------------------ SCP
@functools.lru_cache(maxsize=256)
def _addresses(host: str) -> frozenset[str]:
    """The addresses a configured ``[[sources]] host`` stands for (an IP, or a name resolved once)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return frozenset({host})
    return frozenset({host} | {info[4][0] for info in infos})


def _allowed(config: Config, calling_ae: str, peer_host: str) -> str | None:
    """None when the peer may associate, else why not (one phrase)."""
    matches = [s for s in config.sources if s.ae_title == calling_ae]
    if not matches:
        return "calling AE title not in [[sources]]"
    if any(s.host is None or peer_host in _addresses(s.host) for s in matches):
        return None
    hosts = ", ".join(sorted({s.host for s in matches if s.host}))
    return f"host {peer_host} is not allowed for this AE title (allowed: {hosts})"


def _handlers(config: Config, store: Store) -> list:
    def on_requested(event: evt.Event) -> None:
        rq = event.assoc.requestor.primitive
        calling = rq.calling_ae_title.strip()
        called = rq.called_ae_title.strip()
        peer = f"{event.assoc.requestor.address}:{event.assoc.requestor.port}"
        if called != config.node.ae_title:
            why, diag = f"called AE title {called!r} is not ours ({config.node.ae_title!r})", 0x07
        else:
            why = _allowed(config, calling, event.assoc.requestor.address)
            diag = 0x03
        if why:
            log.warning(
                "event=association_rejected calling_ae=%s called_ae=%s peer=%s reason=%r", calling, called, peer, why
            )
            # Rejected permanent, by the service user, with the matching diagnostic (PS3.8 9.3.4).
            event.assoc.acse.send_reject(0x01, 0x01, diag)
            event.assoc.kill()

    def on_accepted(event: evt.Event) -> None:
        a = event.assoc
        log.info(
            "event=association_accepted calling_ae=%s peer=%s:%s",
            a.requestor.ae_title.strip(), a.requestor.address, a.requestor.port,
        )

    def on_released(event: evt.Event) -> None:
        a = event.assoc
        log.info("event=association_released calling_ae=%s peer=%s:%s", a.requestor.ae_title.strip(), a.requestor.address, a.requestor.port)

    def on_aborted(event: evt.Event) -> None:
        a = event.assoc
        log.warning("event=association_aborted calling_ae=%s peer=%s:%s", a.requestor.ae_title.strip(), a.requestor.address, a.requestor.port)

    def on_echo(event: evt.Event) -> int:
        log.info("event=echo calling_ae=%s", event.assoc.requestor.ae_title.strip())
        return 0x0000

    def on_store(event: evt.Event):
        calling = event.assoc.requestor.ae_title.strip()
        try:
            data = event.encoded_dataset()
        except Exception as exc:  # malformed request: answer, keep serving
            log.warning("event=instance_refused calling_ae=%s reason=unreadable_request detail=%r", calling, str(exc))
            metrics.instance_refused(metrics.PROTOCOL_DIMSE, "unreadable_request")
            return 0xC210
        rq = event.request
        try:
            outcome = ingest(
                store,
                config,
                data,
                calling_ae=calling,
                source="dimse",
                request_sop_instance_uid=str(rq.AffectedSOPInstanceUID or "") or None,
                request_sop_class_uid=str(rq.AffectedSOPClassUID or "") or None,
            )
        except Exception as exc:  # a bug must cost one instance a failure status, never the SCP
            log.error(
                "event=instance_refused calling_ae=%s sop=%s reason=internal_error detail=%r",
                calling, rq.AffectedSOPInstanceUID, f"{type(exc).__name__}: {exc}",
            )
            metrics.instance_refused(metrics.PROTOCOL_DIMSE, "internal_error")
            return 0x0110  # Processing failure (PS3.7 C.4)
        metrics.record_ingest_outcome(outcome, source=calling, protocol=metrics.PROTOCOL_DIMSE)
        if outcome.accepted:
            return outcome.status
        status = pydicom.Dataset()
        status.Status = outcome.status
        status.ErrorComment = outcome.message[:64]  # LO: 64 characters at most
        return status

    return [
        (evt.EVT_REQUESTED, on_requested),
        (evt.EVT_ACCEPTED, on_accepted),
        (evt.EVT_RELEASED, on_released),
        (evt.EVT_ABORTED, on_aborted),
        (evt.EVT_C_ECHO, on_echo),
        (evt.EVT_C_STORE, on_store),
    ]


def make_scp_ae(config: Config) -> AE:
    ae = AE(ae_title=config.node.ae_title)
    ae.maximum_pdu_size = 0  # unlimited: fewer, larger P-DATA fragments on big radiographs
    ae.maximum_associations = config.node.max_associations
    ae.network_timeout = 60
    ae.add_supported_context(Verification)
    for uid in STORAGE_SOP_CLASSES:
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    return ae


def start_scp(config: Config, store: Store):
    """Start the SCP in background threads; returns the server (call ``.shutdown()``).

    Raises OSError when the port cannot be bound.
    """
    ae = make_scp_ae(config)
    server = ae.start_server(
        (config.node.bind, config.node.port), block=False, evt_handlers=_handlers(config, store)
    )
    log.info(
        "event=scp_listening ae_title=%s bind=%s port=%d", config.node.ae_title, config.node.bind, config.node.port
    )
    return server


# ------------------------------------------------------------------------------------ SCU
@dataclass(frozen=True)
class SendResult:
    path: Path
    sop_instance_uid: str | None
    ok: bool
    error: str | None = None


def _scu_ae(calling_ae: str, timeout_seconds: float) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout_seconds
    ae.dimse_timeout = max(timeout_seconds, 30)
    ae.network_timeout = max(timeout_seconds, 30)
    ae.connection_timeout = timeout_seconds
    return ae


def _associate(ae: AE, dest: DestinationConfig):
    """Associate with ``dest``; returns (association, whether the TCP connection ever opened)."""
    opened = threading.Event()
    assoc = ae.associate(
        dest.host, dest.port, ae_title=dest.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, lambda e: opened.set())]
    )
    return assoc, opened.is_set()


def _assoc_failure(assoc, connected: bool = True) -> str:
    if not connected:
        return "connection failed (nothing listening, host unreachable or timed out)"
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        detail = f" (result {rsp.result}, source {rsp.result_source}, reason {rsp.diagnostic})" if rsp else ""
        return "association rejected" + detail
    if assoc.is_aborted:
        return "association aborted"
    return "connection failed (peer unreachable or not a DICOM service)"


def echo(dest: DestinationConfig, calling_ae: str, timeout_seconds: float = 10.0) -> tuple[bool, str]:
    """C-ECHO a DIMSE destination: (ok, one-line message)."""
    ae = _scu_ae(calling_ae, timeout_seconds)
    ae.add_requested_context(Verification)
    assoc, connected = _associate(ae, dest)
    if not assoc.is_established:
        return False, f"{dest.name} ({dest.ae_title}@{dest.host}:{dest.port}): {_assoc_failure(assoc, connected)}"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status and status.get("Status") == 0x0000:
        return True, f"{dest.name} ({dest.ae_title}@{dest.host}:{dest.port}): C-ECHO success"
    code = f"0x{status.Status:04X}" if status and "Status" in status else "no response"
    return False, f"{dest.name} ({dest.ae_title}@{dest.host}:{dest.port}): C-ECHO failed ({code})"


def send_files(
    dest: DestinationConfig, paths: Sequence[Path], calling_ae: str, timeout_seconds: float = 30.0
) -> list[SendResult]:
    """C-STORE every file to ``dest`` over one association; one result per file, in order."""
    datasets: list[tuple[Path, pydicom.Dataset | None, str | None]] = []
    for p in paths:
        try:
            ds = pydicom.dcmread(p)
            datasets.append((p, ds, None))
        except Exception as exc:
            datasets.append((p, None, f"cannot read output file: {exc}"))
    readable = [(p, ds) for p, ds, _ in datasets if ds is not None]
    results: dict[Path, SendResult] = {
        p: SendResult(p, None, False, err) for p, ds, err in datasets if ds is None
    }
    if readable:
        ae = _scu_ae(calling_ae, timeout_seconds)
        # Per SOP class: one context for the uncompressed syntaxes (pynetdicom converts between
        # them) plus one per compressed syntax in use (compressed data can only go as it is).
        contexts: dict[tuple[str, tuple[str, ...]], None] = {}
        for _, ds in readable:
            sop_class, ts = str(ds.SOPClassUID), UID(str(ds.file_meta.TransferSyntaxUID))
            contexts[(sop_class, (ExplicitVRLittleEndian, ImplicitVRLittleEndian))] = None
            if ts.is_compressed:
                contexts[(sop_class, (str(ts),))] = None
        for sop_class, syntaxes in contexts:
            ae.add_requested_context(sop_class, list(syntaxes))
        assoc, connected = _associate(ae, dest)
        if not assoc.is_established:
            why = f"{dest.ae_title}@{dest.host}:{dest.port}: {_assoc_failure(assoc, connected)}"
            for p, ds in readable:
                results[p] = SendResult(p, str(ds.SOPInstanceUID), False, why)
        else:
            try:
                for p, ds in readable:
                    uid = str(ds.SOPInstanceUID)
                    try:
                        status = assoc.send_c_store(ds)
                    except Exception as exc:  # e.g. no accepted context for this SOP class
                        results[p] = SendResult(p, uid, False, f"C-STORE not possible: {exc}")
                        continue
                    code = status.get("Status") if status else None
                    if code is None:
                        results[p] = SendResult(p, uid, False, "no C-STORE response (connection lost or timeout)")
                    elif code == 0x0000 or 0xB000 <= code <= 0xBFFF:  # success or warning: the peer has it
                        results[p] = SendResult(p, uid, True)
                    else:
                        comment = str(status.get("ErrorComment", "") or "")
                        results[p] = SendResult(p, uid, False, f"C-STORE status 0x{code:04X} {comment}".strip())
                    if not assoc.is_established:
                        break
            finally:
                if assoc.is_established:
                    assoc.release()
            for p, ds in readable:
                results.setdefault(p, SendResult(p, str(ds.SOPInstanceUID), False, "association ended before sending"))
    return [results[p] for p in paths]


