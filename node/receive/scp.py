"""The DIMSE Storage and Verification SCP: the allow-list at association time, C-STORE into ingest.

Each handler is a small function bound to one pynetdicom event. A C-STORE data set is written to
a file in the store's tmp folder while it arrives (:mod:`node.receive.chunked`); the handler gives
that file to :func:`node.receive.ingest.ingest` (header parse without pixel decoding, filter,
fsync, move into the spool, SQLite row) and the answer is sent only after that returns. Analysis
happens elsewhere, in worker processes.
"""

from __future__ import annotations

import functools
import logging
import socket

import pydicom
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification

from node.config import Config
from node.dicom import STATUS, STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from node.http import metrics
from node.receive import chunked
from node.receive.ingest import ingest
from node.spool import Store
from node.tls import server_context

__all__ = ["handlers", "make_scp_ae", "start_scp"]

log = logging.getLogger("dxr.dimse")

MAX_PDU_BYTES = 4 << 20
"""The largest P-DATA PDU the SCP accepts (its A-ASSOCIATE-AC maximum length)."""

# Receive path: no per-PDU debug handlers (they cost time on every fragment).
_config.LOG_HANDLER_LEVEL = "none"


# ------------------------------------------------------------------------------------ allow-list
@functools.lru_cache(maxsize=256)
def _addresses(host: str) -> frozenset[str]:
    """The addresses a configured ``[[sources]] host`` stands for (an IP, or a name resolved once)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return frozenset({host})
    return frozenset({host} | {info[4][0] for info in infos})


def _allowed(config: Config, calling_ae: str, peer_host: str) -> str | None:
    """None when the peer may associate, else why not (one phrase).

    A DIMSE ``[[pacs]]`` is a source too: it delivers the studies the node retrieves by C-MOVE."""
    peers = [*config.sources, *(p for p in config.pacs if p.type == "dimse")]
    matches = [s for s in peers if s.ae_title == calling_ae]
    if not matches:
        return "calling AE title not in [[sources]] or [[pacs]]"
    if any(s.host is None or peer_host in _addresses(s.host) for s in matches):
        return None
    hosts = ", ".join(sorted({s.host for s in matches if s.host}))
    return f"host {peer_host} is not allowed for this AE title (allowed: {hosts})"


def _same_host(event: evt.Event) -> int:
    """Other inbound connections (associated or not yet) from this association's peer address."""
    me = event.assoc
    return sum(1 for a in me.ae.active_associations
               if a is not me and a.is_acceptor and a.requestor.address == me.requestor.address)


def _peer(event: evt.Event) -> tuple[str, str]:
    """(calling AE title, ``address:port``) of the association's requestor."""
    a = event.assoc.requestor
    return a.ae_title.strip(), f"{a.address}:{a.port}"


# ------------------------------------------------------------------------------------ handlers
def on_requested(event: evt.Event, config: Config) -> None:
    """Reject an association from outside ``[[sources]]`` or to another called AE title."""
    rq = event.assoc.requestor.primitive
    calling = rq.calling_ae_title.strip()
    called = rq.called_ae_title.strip()
    peer = f"{event.assoc.requestor.address}:{event.assoc.requestor.port}"
    if called != config.node.ae_title:
        why, diag = f"called AE title {called!r} is not ours ({config.node.ae_title!r})", 0x07
    else:
        why = _allowed(config, calling, event.assoc.requestor.address)
        diag = 0x03
    result, source = 0x01, 0x01  # rejected permanent, by the service user (PS3.8 9.3.4)
    if not why and _same_host(event) >= config.node.max_associations_per_host:
        why = f"host has {_same_host(event)} connections open (max_associations_per_host = " \
              f"{config.node.max_associations_per_host})"
        result, source, diag = 0x02, 0x03, 0x02  # transient, service provider: local limit exceeded
    if why:
        log.warning(
            "event=association_rejected calling_ae=%s called_ae=%s peer=%s reason=%r", calling, called, peer, why
        )
        event.assoc.acse.send_reject(result, source, diag)
        event.assoc.kill()


def on_conn_open(event: evt.Event, config: Config) -> None:
    """A peer over its per-host connection limit gets one second to speak (then a rejection) or is closed.

    Every connection's socket reads whole PDUs at once (:func:`recv_exactly`)."""
    sock = event.assoc.dul.socket
    if sock is not None:
        sock.recv = functools.partial(recv_exactly, sock)
    if _same_host(event) >= config.node.max_associations_per_host:
        event.assoc.acse_timeout = min(1.0, config.node.acse_timeout_seconds)


def recv_exactly(assoc_socket, nr_bytes: int) -> bytearray:
    """Read ``nr_bytes`` from a pynetdicom ``AssociationSocket`` into one buffer (fewer bytes only
    when the peer closed), as its own ``recv`` does but without its 4 KiB reads: a 10 MB P-DATA
    PDU took 2,560 Python-level ``recv`` calls and ~40 ms of CPU per instance, the receive
    path's largest cost. Timeouts and errors propagate as from ``socket.recv``.

    The buffer is allocated up to the PDU size the SCP accepts; a peer declaring more (a PDU
    length is any 32-bit number) gets it grown as the bytes arrive, never ahead of them by more
    than what arrived."""
    buffer = bytearray(min(nr_bytes, MAX_PDU_BYTES + 6))
    got = 0
    while got < nr_bytes:
        if got == len(buffer):
            buffer.extend(bytes(min(len(buffer), nr_bytes - got)))
        with memoryview(buffer) as view:
            n = assoc_socket.socket.recv_into(view[got:], len(buffer) - got)
        if n == 0:  # connection closed: what arrived (pynetdicom then reports Evt17)
            del buffer[got:]
            return buffer
        got += n
    return buffer


def on_conn_close(event: evt.Event, config: Config) -> None:
    """Log a connection closed before it ever asked for an association (silent peer, port scan);
    remove the file of a data set that was still arriving."""
    a = event.assoc
    chunked.discard_partial(a)
    if a.requestor.primitive is None:
        log.warning("event=connection_dropped peer=%s:%s reason=%r", a.requestor.address, a.requestor.port,
                    f"no A-ASSOCIATE-RQ within {a.acse_timeout:g} s (acse_timeout_seconds)")


def on_rejected(event: evt.Event, config: Config) -> None:
    """pynetdicom's own rejections: the association limit (every rejection gets a log line)."""
    a = event.assoc
    log.warning("event=association_rejected calling_ae=%s peer=%s:%s reason=%r", a.requestor.ae_title.strip(),
                a.requestor.address, a.requestor.port,
                f"association limit reached (max_associations = {config.node.max_associations})")


def on_accepted(event: evt.Event) -> None:
    log.info("event=association_accepted calling_ae=%s peer=%s", *_peer(event))


def on_released(event: evt.Event) -> None:
    log.info("event=association_released calling_ae=%s peer=%s", *_peer(event))


def on_aborted(event: evt.Event) -> None:
    log.warning("event=association_aborted calling_ae=%s peer=%s", *_peer(event))


def on_echo(event: evt.Event) -> int:
    log.info("event=echo calling_ae=%s", event.assoc.requestor.ae_title.strip())
    return STATUS["success"]


def on_store(event: evt.Event, config: Config, store: Store) -> int | pydicom.Dataset:
    """Ingest the received instance (the file it arrived in, or its bytes); answer its status
    (with an ErrorComment on a refusal)."""
    calling = event.assoc.requestor.ae_title.strip()
    rq = event.request
    if str(rq.AffectedSOPInstanceUID or "").strip() in ("", chunked.MISSING_UID):
        return _refused(calling, "invalid_request", STATUS["cannot_understand"],
                        "the C-STORE request lacks its Affected SOP UIDs")
    try:
        writer = chunked.received_file(event)
        data = writer.finish() if writer is not None else event.encoded_dataset()
    except OSError as exc:  # the receive file could not be written (disk full, no descriptors)
        return _refused(calling, "receive_file_error", STATUS["out_of_resources"], str(exc), error=True)
    except Exception as exc:  # malformed request: answer, keep serving
        return _refused(calling, "unreadable_request", STATUS["cannot_understand"], str(exc))
    try:
        outcome = ingest(
            store,
            config,
            data,
            calling_ae=calling,
            source="dimse",
            request_sop_instance_uid=str(rq.AffectedSOPInstanceUID),
            request_sop_class_uid=str(rq.AffectedSOPClassUID or "") or None,
        )
    except Exception as exc:  # a bug must cost one instance a failure status, never the SCP
        log.error(
            "event=instance_refused calling_ae=%s sop=%s reason=internal_error detail=%r",
            calling, rq.AffectedSOPInstanceUID, f"{type(exc).__name__}: {exc}",
        )
        metrics.instance_refused(metrics.PROTOCOL_DIMSE, "internal_error")
        return STATUS["processing_failure"]
    metrics.record_ingest_outcome(outcome, source=calling, protocol=metrics.PROTOCOL_DIMSE)
    if outcome.accepted:
        return outcome.status
    return _status(outcome.status, outcome.message)


def _refused(calling: str, reason: str, code: int, detail: str, error: bool = False) -> pydicom.Dataset:
    """Log and count a C-STORE refused before ingest; its status with the reason as ErrorComment."""
    (log.error if error else log.warning)("event=instance_refused calling_ae=%s reason=%s detail=%r",
                                          calling, reason, detail)
    metrics.instance_refused(metrics.PROTOCOL_DIMSE, reason)
    return _status(code, detail)


def _status(code: int, comment: str) -> pydicom.Dataset:
    status = pydicom.Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]  # LO: 64 characters at most
    return status


def handlers(config: Config, store: Store) -> list[tuple]:
    """The SCP's event bindings (pynetdicom ``evt_handlers``)."""
    return [
        (evt.EVT_REQUESTED, on_requested, [config]),
        (evt.EVT_CONN_OPEN, on_conn_open, [config]),
        (evt.EVT_CONN_CLOSE, on_conn_close, [config]),
        (evt.EVT_REJECTED, on_rejected, [config]),
        (evt.EVT_ACCEPTED, on_accepted),
        (evt.EVT_RELEASED, on_released),
        (evt.EVT_ABORTED, on_aborted),
        (evt.EVT_C_ECHO, on_echo),
        (evt.EVT_C_STORE, on_store, [config, store]),
    ]


# ------------------------------------------------------------------------------------ server
def make_scp_ae(config: Config) -> AE:
    """The application entity: Verification plus every accepted storage class and transfer syntax."""
    ae = AE(ae_title=config.node.ae_title)
    # Bounded P-DATA: each PDU is read whole into memory (recv_exactly), and with an unlimited size
    # a sender may put a 100 MB data set in one. 4 MiB keeps the receive path's memory bounded
    # while a 10 MB radiograph still takes only three PDUs.
    ae.maximum_pdu_size = MAX_PDU_BYTES
    ae.maximum_associations = config.node.max_associations
    # Silent peers free their slot in seconds: no A-ASSOCIATE-RQ, an idle association, a stalled message.
    ae.acse_timeout = config.node.acse_timeout_seconds
    ae.network_timeout = config.node.network_timeout_seconds
    ae.dimse_timeout = config.node.dimse_timeout_seconds
    ae.add_supported_context(Verification)
    for uid in STORAGE_SOP_CLASSES:
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    return ae


def start_scp(config: Config, store: Store):
    """Start the SCP in background threads; returns the server (call ``.shutdown()``).

    Raises OSError when the port cannot be bound.
    """
    ae = make_scp_ae(config)
    chunked.install(ae, store.tmp_dir)  # C-STORE data sets go to files in tmp/ as they arrive
    server = ae.start_server(
        (config.node.bind, config.node.port), block=False, evt_handlers=handlers(config, store),
        ssl_context=server_context(config.tls) if config.tls else None,
    )
    log.info("event=scp_listening ae_title=%s bind=%s port=%d tls=%d", config.node.ae_title, config.node.bind,
             config.node.port, config.tls is not None)
    return server
