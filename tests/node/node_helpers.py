"""Shared helpers for the node-core tests: configs on free ports, an in-process SCP, a test PACS.

Everything here is real: TOML files parsed by node.config, SQLite, pynetdicom on loopback.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from node.config import Config, load_config
from node.dicom import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from tests.dicom_samples import make_image_dataset, make_sr_dataset  # noqa: F401 (re-exported)
from tests.integration.servers import HOST, free_port  # noqa: F401 (one copy, re-exported)

SCU_AET = "TESTSCU"


def write_config(directory: Path, extra: str = "", *, port: int | None = None, quiet: float = 0.5,
                 destinations: str | None = None, workers: int = 1) -> Path:
    """A small node.toml in ``directory`` (data_dir = directory/var); returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    if destinations is None:
        destinations = '[[destinations]]\nname = "outbox"\ntype = "folder"\n'
    text = (
        "[node]\n"
        'ae_title = "DXRNODE"\n'
        f'bind = "{HOST}"\n'
        f"port = {port or free_port()}\n"
        'data_dir = "var"\n'
        f"workers = {workers}\n"
        "[study]\n"
        f"quiet_period_seconds = {quiet}\n"
        "[[sources]]\n"
        f'ae_title = "{SCU_AET}"\n'
        f'host = "{HOST}"\n'
        f"{destinations}\n"
        "[export]\n"
        "retry_base_delay_seconds = 0.2\n"
        "retry_max_delay_seconds = 0.5\n"
        "max_attempts = 3\n"
        f"{extra}\n"
    )
    path = directory / "node.toml"
    path.write_text(text)
    return path


def make_config(directory: Path, extra: str = "", **kwargs: Any) -> Config:
    return load_config(write_config(directory, extra, **kwargs))


@contextlib.contextmanager
def running_scp(directory: Path, extra: str = "") -> Iterator[tuple[Config, Any]]:
    """The node's Storage SCP in this process on a config made in ``directory`` (``extra`` TOML
    appended): ``(config, store)``, shut down and closed on exit."""
    from node.receive.scp import start_scp
    from node.spool import Store

    cfg = make_config(directory, extra)
    store = Store(cfg.data_dir)
    server = start_scp(cfg, store)
    try:
        yield cfg, store
    finally:
        server.shutdown()
        store.close()


def encode(ds: pydicom.Dataset) -> bytes:
    """``ds`` in DICOM File Format, as an SCP's ``event.encoded_dataset()`` would give it."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def scu(port: int, *, calling: str = SCU_AET, called: str = "DXRNODE", contexts: list[str] | None = None,
        syntaxes: list[str] | None = None):
    """An association from a pynetdicom SCU to ``port`` (caller releases it)."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    for uid in contexts or list(STORAGE_SOP_CLASSES)[:3]:
        ae.add_requested_context(uid, syntaxes or TRANSFER_SYNTAXES[:2])
    return ae.associate(HOST, port, ae_title=called)


def wait_until(predicate: Callable[[], Any], timeout_seconds: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout_seconds} s waiting for {what}")


class TestPacs:
    """A pynetdicom Storage SCP standing in for a PACS: records what it receives.

    ``delay_seconds``: each C-STORE is answered that long after it arrives (a slow PACS);
    ``storing`` counts the requests being handled now.
    """

    __test__ = False  # not a pytest class

    def __init__(self, port: int, ae_title: str = "TESTPACS", delay_seconds: float = 0.0):
        self.port = port
        self.ae_title = ae_title
        self.delay_seconds = delay_seconds
        self.storing = 0
        self.received: list[str] = []
        self.calling: list[str] = []
        self.associations = 0
        self._lock = threading.Lock()
        self.server = None

    def start(self) -> "TestPacs":
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        for uid in STORAGE_SOP_CLASSES:
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)

        def on_store(event):
            if self.delay_seconds:
                with self._lock:
                    self.storing += 1
                time.sleep(self.delay_seconds)
            with self._lock:
                self.storing -= 1 if self.delay_seconds else 0
                self.received.append(str(event.request.AffectedSOPInstanceUID))
                self.calling.append(event.assoc.requestor.ae_title.strip())
            return 0x0000

        def on_accepted(event):
            with self._lock:
                self.associations += 1

        self.server = ae.start_server(
            (HOST, self.port), block=False,
            evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_ACCEPTED, on_accepted)],
        )
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the node has closed ``sock`` (EOF or a reset), False while it is still open."""
    sock.settimeout(0.2)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True
