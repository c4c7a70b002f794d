"""Chunked C-STORE receive: the data set goes to a file in the spool's tmp folder as it arrives.

Without this, pynetdicom assembles each received data set in memory (a ``BytesIO``), the
handler copies it (``event.encoded_dataset()``) and the spool write copies it again: a 100 MB
instance costs ~300 MB per association. With ``_config.STORE_RECV_CHUNKED_DATASET`` pynetdicom
writes each P-DATA fragment to a ``NamedTemporaryFile`` instead; this module patches that, for
**pynetdicom 3.0.4 only** (the version whose ``dimse_messages.DIMSEMessage.decode_msg`` was read
and tested; with any other version nothing is patched, the flag stays off and the node receives in
memory as before, after one log line):

* ``dimse_messages.NamedTemporaryFile`` -> :class:`SpoolWriter` in the store's ``tmp`` folder
  (same filesystem as the spool, so the handler moves the finished file in without a copy), for
  associations of an AE registered by :func:`install`; other AEs in the process (the C-GET SCU of
  :mod:`node.retrieve.dimse`) get their data set in memory as without the flag. The writer is the
  spool's :class:`~node.spool.files.DirectWriter` (2 MiB aligned staging, O_DIRECT, plain writes
  where refused): data reaches the disk while it arrives, through no page cache and with no
  instance-sized buffer.
* A C-STORE-RQ without (0000,1000) Affected SOP Instance UID or (0000,0002) Affected SOP Class
  UID: 3.0.4 reads both to build the file's File Meta inside the DUL reactor, and the
  AttributeError killed the association's thread with a traceback. The command set decoder
  (``dimse_messages.decode``) gives a missing instance UID the value :data:`MISSING_UID` (and a
  missing class UID the presentation context's), so the handler runs and refuses the request
  0xC210 (``node.receive.scp.on_store``), where pynetdicom would ignore it and leave the peer
  waiting for its timeout.
* A disk error while writing (ENOSPC, EMFILE) must not escape into the reactor either: the writer
  keeps the error, drops the rest of the data set, and the handler answers 0xA700.

pynetdicom closes the file after the handler and unlinks its name (errors ignored), which is a
no-op once the handler has moved it into the spool. The file of a data set still arriving when
its connection closes (an abort, a dropped connection) is removed by :func:`discard_partial`
(the SCP's connection-closed handler), or when its writer is garbage-collected, and
``Store.recover`` clears ``tmp/.*.tmp`` at start.
"""

from __future__ import annotations

import errno
import io
import itertools
import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any

import pynetdicom
from pynetdicom import _config, dimse_messages

from node.spool.files import DirectWriter, dataset_body

__all__ = ["SpoolWriter", "discard_partial", "install", "received_file"]

log = logging.getLogger("dxr.dimse")

VERIFIED_PYNETDICOM = "3.0.4"
_spool_dirs: "weakref.WeakKeyDictionary[Any, Path]" = weakref.WeakKeyDictionary()
_decoding = threading.local()
_names = itertools.count()
_originals: dict[str, Any] = {}


class SpoolWriter(DirectWriter):
    """The file pynetdicom writes one received data set into (``NamedTemporaryFile``'s API as used
    by ``decode_msg``: ``write``, ``file.flush``, ``name``, ``close``), plus :meth:`finish`: a
    :class:`~node.spool.files.DirectWriter` in ``directory`` whose errors never reach the reactor
    (kept for the handler) and whose file goes with it unless the handler moved it away."""

    def __init__(self, directory: Path):
        self.error: str | None = None
        self._finished = False
        try:
            super().__init__(directory / f".rx.{os.getpid()}.{next(_names)}.tmp")  # .tmp: Store.recover clears it
        except OSError as exc:
            self.error = f"cannot create {self.name}: {exc.strerror or exc}"
        self._finalizer = weakref.finalize(self, _discard, self.fd, self.name)

    # ---------------------------------------------------------------- what pynetdicom calls
    @property
    def file(self) -> "SpoolWriter":
        """pynetdicom calls ``.file.flush()`` after each fragment (a property: no reference cycle)."""
        return self

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; never raises (a disk error is kept for the handler, the rest dropped)."""
        n = memoryview(data).nbytes
        if self.error is None:
            try:
                return super().write(data)
            except OSError as exc:
                self.error = f"cannot write {self.name}: {exc.strerror or exc}"
        self.size += n
        return n

    def flush(self) -> None:
        """Nothing: the data set is written in whole staging buffers, the tail by :meth:`finish`."""

    def close(self) -> None:
        """Release the descriptor and buffer; remove the file unless it was moved away (idempotent)."""
        self._release_buffer()
        self._finalizer()  # closes the descriptor, unlinks the name (gone once moved into the spool)

    # ---------------------------------------------------------------- ours
    def finish(self) -> Path:
        """Write what is staged (the file then holds exactly the received bytes); returns its path.

        Raises
        ------
        OSError
            The file could not be created or written (it is then incomplete).
        """
        if not self._finished and self.error is None:
            self._finished = True
            try:
                super().finish()
            except OSError as exc:
                self.error = f"cannot write {self.name}: {exc.strerror or exc}"
            self._release_buffer()
        if self.error is not None:
            raise OSError(errno.EIO, self.error)
        return Path(self.name)


def _discard(fd: int | None, name: str) -> None:
    """Close ``fd`` and unlink ``name``, ignoring errors (a writer closed, or dropped unclosed)."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.unlink(name)
    except OSError:
        pass


# ------------------------------------------------------------------------------------ the patch
class _InMemory(io.BytesIO):
    """What an unregistered AE's association receives into: turned back into pynetdicom's
    in-memory data set when the message is complete (see :func:`_decode_msg`)."""

    name = ""  # pynetdicom makes a Path of it (reset with the data set)

    @property
    def file(self) -> "_InMemory":
        return self


def _open_data_set_file(*args: Any, **kwargs: Any) -> SpoolWriter | _InMemory:
    """``dimse_messages.NamedTemporaryFile``: a :class:`SpoolWriter` for a registered AE's association."""
    ae = getattr(getattr(_decoding, "assoc", None), "ae", None)
    directory = _spool_dirs.get(ae) if ae is not None else None
    return _InMemory() if directory is None else SpoolWriter(directory)


def _decode_msg(self: Any, primitive: Any, assoc: Any = None) -> bool:
    """``DIMSEMessage.decode_msg``, knowing which association's P-DATA the thread decodes.

    Other AEs in the process (the C-GET SCU, a test's PACS) get the data set in memory, as
    without the (process-global) flag: ``event.encoded_dataset()`` and ``event.dataset`` work."""
    _decoding.assoc, _decoding.message = assoc, self
    try:
        done = _originals["decode_msg"](self, primitive, assoc)
    finally:
        _decoding.assoc = _decoding.message = None  # holds no message (and its file) past the call
    held = getattr(self, "_data_set_file", None)
    if done and isinstance(held, _InMemory):
        with held.getbuffer() as raw:
            self.data_set = io.BytesIO(dataset_body(raw))  # after the File Meta
        self._data_set_file = self._data_set_path = None
    return done


MISSING_UID = "2.25.0"
"""Stands for a C-STORE-RQ's missing Affected SOP Instance UID (a valid UID no instance has): the
request then reaches the handler, which refuses it with a status (pynetdicom would ignore it and
leave the peer waiting for its timeout)."""


def _decode(*args: Any, **kwargs: Any) -> Any:
    """``dimse_messages.decode`` (command sets): a C-STORE-RQ always has both Affected UIDs.

    One without its class UID gets the presentation context's, and :data:`MISSING_UID` for its
    instance UID, so that it is refused as a request without UIDs."""
    cs = _originals["decode"](*args, **kwargs)
    if cs.get("CommandField") == 0x0001 and cs.get("CommandDataSetType", 0x0101) != 0x0101:
        if not str(cs.get("AffectedSOPClassUID", "") or "").strip():
            cs.AffectedSOPClassUID = _context_class()
            cs.AffectedSOPInstanceUID = MISSING_UID
        if not str(cs.get("AffectedSOPInstanceUID", "") or "").strip():
            cs.AffectedSOPInstanceUID = MISSING_UID
    return cs


def _context_class() -> str:
    """The abstract syntax of the presentation context the message being decoded came on ("" unknown)."""
    try:
        return str(_decoding.assoc._accepted_cx[_decoding.message.context_id].abstract_syntax)
    except (AttributeError, KeyError):
        return ""


def _write_file_meta_info(fp: Any, file_meta: Any, enforce_standard: bool = True) -> None:
    """``write_file_meta_info`` that writes a File Meta with empty UIDs as it is (the handler refuses it)."""
    try:
        _originals["write_file_meta_info"](fp, file_meta, enforce_standard)
    except (AttributeError, ValueError):
        _originals["write_file_meta_info"](fp, file_meta, False)


def install(ae: Any, tmp_dir: Path) -> bool:
    """Receive ``ae``'s C-STORE data sets into files in ``tmp_dir``; False (and one log line) when
    the installed pynetdicom is not the version this patch was verified against."""
    if pynetdicom.__version__ != VERIFIED_PYNETDICOM:
        log.warning("event=chunked_receive_off reason=%r", f"pynetdicom {pynetdicom.__version__} is not the "
                    f"verified {VERIFIED_PYNETDICOM}: C-STORE data sets are received in memory")
        return False
    if not _originals:
        _originals.update(decode=dimse_messages.decode,
                          write_file_meta_info=dimse_messages.write_file_meta_info,
                          decode_msg=dimse_messages.DIMSEMessage.decode_msg)
        dimse_messages.NamedTemporaryFile = _open_data_set_file
        dimse_messages.decode = _decode
        dimse_messages.write_file_meta_info = _write_file_meta_info
        dimse_messages.DIMSEMessage.decode_msg = _decode_msg
        _config.STORE_RECV_CHUNKED_DATASET = True
    _spool_dirs[ae] = Path(tmp_dir)
    return True


def discard_partial(assoc: Any) -> None:
    """Close and remove the file of a data set still arriving when its connection closed."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    writer = getattr(message, "_data_set_file", None)
    if isinstance(writer, SpoolWriter):
        writer.close()


def received_file(event: Any) -> SpoolWriter | None:
    """The C-STORE request's :class:`SpoolWriter`, or None (received in memory: ``event.encoded_dataset()``)."""
    writer = getattr(event.request, "_dataset_file", None)
    return writer if isinstance(writer, SpoolWriter) else None
