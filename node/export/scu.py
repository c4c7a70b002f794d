"""The DIMSE SCU: C-ECHO a destination, and C-STORE a batch of outputs over one association."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from node.export.config import DestinationConfig
from node.dicom import STATUS
from node.export.result import SendResult
from node.tls import TlsConfig, client_context

__all__ = ["associate", "association_failure", "echo", "scu_ae", "send_files"]


def scu_ae(calling_ae: str, timeout_seconds: float) -> AE:
    """The node's requesting AE with its timeouts (seconds; DIMSE and network at least 30 s)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout_seconds
    ae.dimse_timeout = max(timeout_seconds, 30)
    ae.network_timeout = max(timeout_seconds, 30)
    ae.connection_timeout = timeout_seconds
    return ae


def associate(ae: AE, dest: DestinationConfig, tls: TlsConfig | None = None):
    """Associate with ``dest`` (over TLS when it says ``tls = true``); returns (association, whether
    the TCP connection ever opened)."""
    opened = threading.Event()
    tls_args = (client_context(tls), dest.host) if dest.tls else None
    assoc = ae.associate(
        dest.host, dest.port, ae_title=dest.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, lambda e: opened.set())],
        tls_args=tls_args,
    )
    return assoc, opened.is_set()


def association_failure(assoc, connected: bool = True) -> str:
    """Why an association was not established, in words for a log line or an error."""
    if not connected:
        return "connection failed (nothing listening, host unreachable or timed out)"
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        detail = f" (result {rsp.result}, source {rsp.result_source}, reason {rsp.diagnostic})" if rsp else ""
        return "association rejected" + detail
    if assoc.is_aborted:
        return "association aborted"
    return "connection failed (peer unreachable or not a DICOM service)"


def echo(dest: DestinationConfig, calling_ae: str, timeout_seconds: float = 10.0,
         tls: TlsConfig | None = None) -> tuple[bool, str]:
    """C-ECHO a DIMSE destination: (ok, one-line message)."""
    ae = scu_ae(calling_ae, timeout_seconds)
    ae.add_requested_context(Verification)
    assoc, connected = associate(ae, dest, tls)
    if not assoc.is_established:
        return False, f"{dest.name} ({dest.ae_title}@{dest.host}:{dest.port}): {association_failure(assoc, connected)}"
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if status and status.get("Status") == STATUS["success"]:
        return True, f"{dest.name} ({dest.ae_title}@{dest.host}:{dest.port}): C-ECHO success"
    code = f"0x{status.Status:04X}" if status and "Status" in status else "no response"
    return False, f"{dest.name} ({dest.ae_title}@{dest.host}:{dest.port}): C-ECHO failed ({code})"


def _as_accepted(assoc, ds: pydicom.Dataset) -> pydicom.Dataset:
    """``ds`` as it can go: compressed when the peer accepted that syntax, else decompressed.

    The node writes its picture JPEG-LS lossless; a peer that accepts only the uncompressed
    syntaxes for Secondary Capture gets it decoded (Explicit VR Little Endian).
    """
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    if not ts.is_compressed:
        return ds
    sop_class = str(ds.SOPClassUID)
    if any(str(c.abstract_syntax) == sop_class and str(c.transfer_syntax[0]) == ts for c in assoc.accepted_contexts):
        return ds
    ds.decompress(generate_instance_uid=False)  # the same instance, another encoding
    return ds


def send_files(
    dest: DestinationConfig, paths: Sequence[Path], calling_ae: str, timeout_seconds: float = 30.0,
    on_result: Callable[[SendResult], None] | None = None, tls: TlsConfig | None = None,
) -> list[SendResult]:
    """C-STORE every file to ``dest`` over one association; one result per file, in order.

    ``on_result`` is called with each C-STORE's result as its response arrives (before the next
    instance is sent), so the caller can record it at once.
    """
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
        ae = scu_ae(calling_ae, timeout_seconds)
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
        assoc, connected = associate(ae, dest, tls)
        if not assoc.is_established:
            why = f"{dest.ae_title}@{dest.host}:{dest.port}: {association_failure(assoc, connected)}"
            for p, ds in readable:
                results[p] = SendResult(p, str(ds.SOPInstanceUID), False, why)
        else:
            try:
                for p, ds in readable:
                    uid = str(ds.SOPInstanceUID)
                    try:
                        ds = _as_accepted(assoc, ds)
                        status = assoc.send_c_store(ds)
                    except Exception as exc:  # e.g. no accepted context for this SOP class
                        results[p] = SendResult(p, uid, False, f"C-STORE not possible: {exc}")
                        continue
                    code = status.get("Status") if status else None
                    if code is None:
                        results[p] = SendResult(p, uid, False, "no C-STORE response (connection lost or timeout)")
                    elif code == STATUS["success"] or 0xB000 <= code <= 0xBFFF:  # success or warning: the peer has it
                        results[p] = SendResult(p, uid, True)
                    else:
                        comment = str(status.get("ErrorComment", "") or "")
                        results[p] = SendResult(p, uid, False, f"C-STORE status 0x{code:04X} {comment}".strip())
                    if on_result is not None:
                        on_result(results[p])
                    if not assoc.is_established:
                        break
            finally:
                if assoc.is_established:
                    assoc.release()
            for p, ds in readable:
                results.setdefault(p, SendResult(p, str(ds.SOPInstanceUID), False, "association ended before sending"))
    return [results[p] for p in paths]
