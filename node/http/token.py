"""The STOW-RS bearer token: read (or first created) once at start, compared in constant time per request."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from node.config import ConfigError, HttpConfig

__all__ = ["authorised", "load_token"]

log = logging.getLogger("dxr.dicomweb")


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


def authorised(authorization_header: str, token: str) -> bool:
    """True when an ``Authorization`` header value carries ``Bearer <token>``."""
    scheme, _, given = authorization_header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
