"""The HL7 destination: one ORU^R01 per SR over MLLP, each waiting for its ACK.

MLLP frames a message as ``0x0B message 0x1C 0x0D``. A message counts as delivered only on an
ACK whose MSA-1 is ``AA`` (or ``CA``) and whose MSA-2 names our control ID; ``AE``/``AR``
(``CE``/``CR``), no ACK within ``ack_timeout_seconds``, a closed or refused connection are
failed attempts: the exporter retries them with backoff, then ``failed`` until ``dxr-node
queue retry``. One TCP connection per message (results are few; a peer that drops an idle
connection cannot lose one).
"""

from __future__ import annotations

import datetime
import socket
import time
from typing import Any

import hl7
import pydicom

from node.export.config import DestinationConfig
from node.export.oru import build_oru
from node.export.result import SendResult
from node.spool import Export

__all__ = ["check_ack", "echo_hl7", "exchange", "send_hl7"]

START, END = b"\x0b", b"\x1c\x0d"
MAX_ACK_BYTES = 1024 * 1024
"""An answer longer than this is not an ACK."""


def exchange(host: str, port: int, message: str, timeout_seconds: float) -> str:
    """Send one MLLP-framed message and return the framed answer (decoded UTF-8).

    Raises
    ------
    OSError
        Connection refused or lost, or no complete answer within ``timeout_seconds`` (``TimeoutError``).
    """
    deadline = time.monotonic() + timeout_seconds
    with socket.create_connection((host, port), timeout=timeout_seconds) as sock:
        sock.sendall(START + message.encode("utf-8") + END)
        buffer = b""
        while END not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no ACK within {timeout_seconds:g} s")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"no ACK within {timeout_seconds:g} s") from None
            if not chunk:
                raise ConnectionError("the peer closed the connection before its ACK")
            buffer += chunk
            if len(buffer) > MAX_ACK_BYTES:
                raise ConnectionError("the peer's answer is not an ACK (over 1 MiB)")
    start = buffer.find(START)
    return buffer[start + 1 if start >= 0 else 0:buffer.index(END)].decode("utf-8", "replace")


def check_ack(answer: str, control_id: str) -> str | None:
    """None when ``answer`` accepts message ``control_id``, else why not (one line)."""
    try:
        msa = hl7.parse(answer).segment("MSA")
    except Exception as exc:  # noqa: BLE001 - any unreadable answer is a failed attempt
        return f"the answer is not an HL7 ACK ({type(exc).__name__}: {str(exc)[:120]})"
    code, acked = str(msa(1)), str(msa(2))
    if acked != control_id:
        return f"ACK for message {acked!r}, not ours ({control_id!r})"
    if code in ("AA", "CA"):
        return None
    text = str(msa(3)) if len(msa) > 3 else ""
    words = {"AE": "application error", "AR": "application reject", "CE": "commit error", "CR": "commit reject"}
    return f"ACK {code} ({words.get(code, 'not accepted')}){': ' + text if text else ''}"


def _measured_image(sr: pydicom.Dataset) -> str | None:
    """SOP Instance UID of the image the SR's combined result was measured on (None for a refusal)."""
    import highdicom as hd

    for group in hd.sr.MeasurementReport.from_sequence([sr]).get_planar_roi_measurement_groups():
        if str(group.tracking_identifier or "").startswith("DXR-BMD"):
            return str(group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    return None


def _pdf_for(store: Any, export: Export, sr: pydicom.Dataset) -> bytes | None:
    """The PDF report of the same run and image as the SR (None when there is none)."""
    image = _measured_image(sr)
    rows = store._query(  # read-only: the PDFs of the SR's job
        "SELECT p.path FROM outputs s JOIN outputs p ON p.job_id=s.job_id WHERE s.sop_instance_uid=? AND p.kind='PDF'",
        (export.output_sop_instance_uid,))
    for row in rows:
        pdf = pydicom.dcmread(store.data_dir / row["path"])
        sources = {str(r.ReferencedSOPInstanceUID) for r in pdf.get("SourceInstanceSequence", [])}
        if image in sources:
            return bytes(pdf.EncapsulatedDocument[:int(pdf.EncapsulatedDocumentLength)])
    return None


def send_one(dest: DestinationConfig, store: Any, export: Export) -> SendResult:
    """Build and send the ORU of one SR export; its :class:`SendResult`."""
    path = store.data_dir / export.path
    control_id = f"DXR{export.id}-{export.attempts + 1}"
    try:
        sr = pydicom.dcmread(path)
        pdf = _pdf_for(store, export, sr) if dest.embed_pdf else None
        oru = build_oru(sr, dest, control_id, pdf=pdf, now=datetime.datetime.now(datetime.timezone.utc))
    except Exception as exc:  # noqa: BLE001 - an unreadable SR fails this export, not the others
        return SendResult(path, export.output_sop_instance_uid, False, f"cannot build the ORU: {type(exc).__name__}: {exc}")
    try:
        answer = exchange(str(dest.host), int(dest.port or 0), oru.message, dest.ack_timeout_seconds)
    except OSError as exc:
        return SendResult(path, export.output_sop_instance_uid, False,
                          f"{dest.host}:{dest.port}: {type(exc).__name__}: {exc.strerror or exc}")
    problem = check_ack(answer, control_id)
    return SendResult(path, export.output_sop_instance_uid, problem is None,
                      None if problem is None else f"{dest.host}:{dest.port}: {problem}")


def send_hl7(dest: DestinationConfig, store: Any, exports: list[Export]) -> list[SendResult]:
    """One ORU^R01 per SR export, each acknowledged before the next; one result each, in order."""
    return [send_one(dest, store, e) for e in exports]


def echo_hl7(dest: DestinationConfig, timeout_seconds: float) -> tuple[bool, str]:
    """``dxr-node echo`` for an HL7 destination: can a TCP connection be opened? (ok, one line)."""
    where = f"{dest.name} (HL7 MLLP {dest.host}:{dest.port})"
    try:
        with socket.create_connection((str(dest.host), int(dest.port or 0)), timeout=timeout_seconds):
            return True, f"{where}: connection accepted"
    except OSError as exc:
        return False, f"{where}: {type(exc).__name__}: {exc.strerror or exc}"

