"""The STOW-RS client: sends a batch of outputs to a ``type = "dicomweb"`` destination (dicomweb-client).

The exporter (:mod:`node.export.exporter`) claims due exports, and for a DICOMweb destination calls
:func:`send_stow` with the output files of one batch. All files go in one STOW-RS request
(``POST {url}/studies``), as the dcm4chee STOW measurements recommend (batch, reuse the
connection). The result is one :class:`node.export.result.SendResult` per file, so retries, backoff,
``failed`` and ``dxr-node queue retry`` work exactly as for C-STORE destinations. dicomweb-client's
own retrying is switched off: the exporter owns the backoff.

Authentication: ``token`` (or the first line of ``token_file``) as ``Authorization: Bearer``,
or ``username`` + ``password`` as HTTP basic auth.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from node.export.config import DestinationConfig
from node.export.result import SendResult

__all__ = ["bearer_token", "make_client", "send_stow"]

log = logging.getLogger("dxr.export.stow")
# dicomweb-client logs every request at INFO; the exporter logs one line per export already.
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)

DEFAULT_TIMEOUT_SECONDS = 60.0


def bearer_token(dest: DestinationConfig) -> str | None:
    """The destination's bearer token (``token``, else the content of ``token_file``), stripped; or None.

    Raises ValueError when the token file cannot be read."""
    if dest.token:
        return dest.token.strip()
    if dest.token_file is not None:
        try:
            return Path(dest.token_file).read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"token_file {dest.token_file} of destination {dest.name!r} cannot be read ({exc})") from None
    return None


def make_client(dest: DestinationConfig, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> DICOMwebClient:
    """A dicomweb-client for ``dest`` with its authentication and no internal retries.

    Raises
    ------
    ValueError
        The destination has no url, or its token file cannot be read.
    """
    if not dest.url:
        raise ValueError(f"destination {dest.name!r} has no url")
    session = requests.Session()
    token = bearer_token(dest)
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif dest.username:
        session.auth = (dest.username, dest.password or "")
    client = DICOMwebClient(url=dest.url.rstrip("/"), session=session, timeout=timeout_seconds)
    client.set_http_retry_params(retry=False)
    return client


def _http_error_text(exc: requests.exceptions.HTTPError) -> str:
    resp = exc.response
    if resp is None:
        return str(exc)
    body = (resp.text or "").strip().replace("\n", " ")
    return f"HTTP {resp.status_code} {resp.reason or ''}".strip() + (f": {body[:200]}" if body else "")


def send_stow(
    dest: DestinationConfig, paths: Sequence[Path], timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> list[SendResult]:
    """STOW-RS every file to ``dest`` in one request; one result per file, in order.

    A file is delivered when the server lists it in ReferencedSOPSequence (or answers 2xx with
    an empty body); it failed when the server lists it in FailedSOPSequence, or the request
    failed as a whole (connection refused, timeout, 4xx/5xx).
    """
    paths = list(paths)
    results: dict[int, SendResult] = {}
    readable: list[tuple[int, Path, pydicom.Dataset]] = []
    for i, p in enumerate(paths):
        try:
            readable.append((i, p, pydicom.dcmread(p)))
        except Exception as exc:  # unreadable output file: this export fails, the others go
            results[i] = SendResult(p, None, False, f"cannot read output file: {exc}")
    if readable:
        where = f"STOW-RS to {dest.url}"
        try:
            client = make_client(dest, timeout_seconds)
            response = client.store_instances([ds for _, _, ds in readable])
        except requests.exceptions.HTTPError as exc:
            error = f"{where}: {_http_error_text(exc)}"
            response = None
        except requests.exceptions.RequestException as exc:
            error = f"{where}: {type(exc).__name__}: {str(exc)[:200]}"
            response = None
        except ValueError as exc:  # configuration (token file), or an unparseable response
            error = f"{where}: {exc}"
            response = None
        if response is None:
            for i, p, ds in readable:
                results[i] = SendResult(p, str(ds.SOPInstanceUID), False, error)
        else:
            stored = {str(item.get("ReferencedSOPInstanceUID", "")) for item in response.get("ReferencedSOPSequence", [])}
            failed = {
                str(item.get("ReferencedSOPInstanceUID", "")): item.get("FailureReason")
                for item in response.get("FailedSOPSequence", [])
            }
            listed = bool(stored or failed)
            for i, p, ds in readable:
                uid = str(ds.SOPInstanceUID)
                if uid in failed:
                    reason = failed[uid]
                    code = f"0x{int(reason):04X}" if reason is not None else "unknown"
                    results[i] = SendResult(p, uid, False, f"{where}: instance refused, FailureReason {code}")
                elif uid in stored or not listed:
                    results[i] = SendResult(p, uid, True)
                else:
                    results[i] = SendResult(p, uid, False, f"{where}: the response does not list this instance")
    out = [results[i] for i in range(len(paths))]
    log.debug("stow_export destination=%s sent=%d failed=%d", dest.name, sum(r.ok for r in out),
              sum(not r.ok for r in out))
    return out
