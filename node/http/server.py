"""uvicorn in a background thread of ``dxr-node serve``, on a socket bound before the thread starts."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette

from node.config import Config, HttpConfig
from node.http.guard import guarded_protocol, raise_open_file_limit
from node.http.app import create_app
from node.spool import Store
from node.tls import TlsConfig, server_context

__all__ = ["HttpServer", "start_http_server"]

log = logging.getLogger("dxr.dicomweb")

MAX_HEADER_BYTES = 16 * 1024
"""A request line plus headers larger than this is answered 400 by h11."""


class HttpServer:
    """uvicorn serving :func:`create_app` in a background thread; :meth:`stop` ends it.

    The listening socket is bound here, in the caller's thread, so a port in use raises
    ``OSError`` with the system's reason before any thread starts. uvicorn logs through the
    node's logging (one line per event), at WARNING and above.
    """

    def __init__(self, app: Starlette, host: str, port: int, http: HttpConfig | None = None,
                 tls: TlsConfig | None = None) -> None:
        self.host, self.port = host, port
        http = http or HttpConfig()
        ssl: dict = {}
        if tls is not None:  # HTTPS only; client certificates checked as for DIMSE
            ssl = dict(ssl_certfile=str(tls.certificate), ssl_keyfile=str(tls.private_key),
                       ssl_ca_certs=str(tls.ca_certificates) if tls.ca_certificates else None,
                       ssl_cert_reqs=server_context(tls).verify_mode)
        # Bounded: open connections (excess closed at once), time to send request headers, keep-alive
        # idle time, header size (h11), concurrent requests (503 beyond).
        cfg = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
            timeout_keep_alive=http.header_timeout_seconds, server_header=False, log_config=None,
            http=guarded_protocol(http.max_connections, http.header_timeout_seconds),
            limit_concurrency=http.max_connections, h11_max_incomplete_event_size=MAX_HEADER_BYTES, **ssl,
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
    raise_open_file_limit()
    app = create_app(config, store)
    return HttpServer(app, config.http.bind, config.http.port, config.http, config.tls).start()
