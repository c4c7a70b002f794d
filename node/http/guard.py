"""uvicorn's HTTP/1.1 protocol with the limits it lacks: open connections and time to send request headers.

uvicorn (h11) keeps a connection that never sends a request, or trickles its headers, open
forever; idle connections then exhaust the process's file descriptors and with them the DIMSE
listener (an adversarial run: 1,074 idle connections stopped C-ECHO, C-STORE and /healthz).
:func:`guarded_protocol` returns an ``H11Protocol`` subclass that

- closes a new connection at once (one log line) when ``max_connections`` are already open;
- closes a connection whose request headers are not complete within ``header_timeout`` seconds
  of its opening or of its previous response (slowloris, idle keep-alive).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["guarded_protocol", "raise_open_file_limit"]

log = logging.getLogger("dxr.http")


def guarded_protocol(max_connections: int, header_timeout: float) -> type[H11Protocol]:
    """An H11Protocol class with a connection cap and a request-header deadline."""

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("event=http_connection_refused peer=%s reason=%r", _peer(self.client),
                            f"{len(self.connections) - 1} connections open ([http] max_connections = {max_connections})")
                transport.abort()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            if not self.transport.is_closing():
                log.warning("event=http_connection_dropped peer=%s reason=%r", _peer(self.client),
                            f"no complete request headers within {header_timeout:g} s ([http] header_timeout_seconds)")
                self.transport.abort()

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            super().data_received(data)
            if self.cycle is not cycle:  # a request's headers are complete: its body may stream slowly
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def _peer(client: Any) -> str:
    return "%s:%d" % tuple(client[:2]) if client else "-"


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (systemd's soft default is 1024); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (ValueError, OSError):
            pass
    return soft
