"""TLS for DIMSE in and out and for HTTP: the ``[tls]`` section and the SSL contexts built from it.

With ``[tls]`` in the config the DIMSE listener and the HTTP server speak TLS only (DICOM's
Secure Transport Connection Profile: TLS on the association's TCP connection; DCMTK
``echoscu +tls``); a ``[[destinations]]`` entry of type ``dimse`` with ``tls = true`` is
reached over TLS, verified against ``ca_certificates``, presenting our certificate if the peer
asks. ``require_client_certificate`` makes the listeners refuse a peer without a certificate
signed by ``ca_certificates`` (mutual TLS: the peer's identity, not just its AE title).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.toml_section import Section, path_value

__all__ = ["TlsConfig", "client_context", "parse_tls", "server_context"]


@dataclass(frozen=True)
class TlsConfig:
    certificate: Path
    """Our certificate chain (PEM)."""
    private_key: Path
    """Its private key (PEM, unencrypted: the node starts unattended)."""
    ca_certificates: Path | None = None
    """CA certificates (PEM) that peers' certificates must chain to."""
    require_client_certificate: bool = False


def parse_tls(cfg_path: Path, base: Path, raw: dict[str, Any]) -> TlsConfig | None:
    if "tls" not in raw:
        return None
    sec = Section(cfg_path, "[tls]", raw["tls"],
                  {"certificate", "private_key", "ca_certificates", "require_client_certificate"})
    for key in ("certificate", "private_key"):
        sec.str(key, required=True)
    tls = TlsConfig(
        certificate=path_value(sec, "certificate", base),
        private_key=path_value(sec, "private_key", base),
        ca_certificates=path_value(sec, "ca_certificates", base),
        require_client_certificate=sec.bool("require_client_certificate", False),
    )
    if tls.require_client_certificate and tls.ca_certificates is None:
        sec.fail("[tls] require_client_certificate = true needs ca_certificates (to verify the clients)")
    for key in ("certificate", "private_key", "ca_certificates"):
        value = getattr(tls, key)
        if value is not None and not value.is_file():
            sec.fail(f"[tls] {key}: no such file {value}")
    return tls


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """The listeners' context: TLS 1.2+, our certificate, client certificates checked as configured."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.certificate, tls.private_key)
    if tls.ca_certificates is not None:
        ctx.load_verify_locations(tls.ca_certificates)
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    return ctx


def client_context(tls: TlsConfig | None) -> ssl.SSLContext:
    """The context for a TLS destination: the peer verified against ca_certificates (else the system's CAs)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                      cafile=str(tls.ca_certificates) if tls and tls.ca_certificates else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls is not None:
        ctx.load_cert_chain(tls.certificate, tls.private_key)
    return ctx
