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
  :mod:`node.retrieve.dimse`) get their data set in memory as without the flag. The writer copies fragments
  into a reused 2 MiB page-aligned buffer and writes it with O_DIRECT when full: data reaches the
  disk while it arrives, through no page cache (28-45 ms per 10 MB on the development VM) and with
  no instance-sized buffer. Where O_DIRECT is refused (EINVAL) it writes plainly.
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
import fcntl
import io
import itertools
import logging
import mmap
import os
import threading
import weakref
from pathlib import Path
from typing import Any

import pynetdicom
from pynetdicom import _config, dimse_messages

__all__ = ["SpoolWriter", "discard_partial", "install", "received_file"]

log = logging.getLogger("dxr.dimse")

VERIFIED_PYNETDICOM = "3.0.4"
CHUNK_BYTES = 2 << 20
"""Size of each writer's page-aligned staging buffer: one O_DIRECT write per 2 MiB received."""
_ALIGN = 4096
_POOL_MAX = 16
"""Staging buffers kept for reuse (the rest are unmapped when their writer closes)."""

_spool_dirs: "weakref.WeakKeyDictionary[Any, Path]" = weakref.WeakKeyDictionary()
_decoding = threading.local()
_pool: list[mmap.mmap] = []
_pool_lock = threading.Lock()
_names = itertools.count()
_originals: dict[str, Any] = {}


class SpoolWriter:
    """The file pynetdicom writes one received data set into (``NamedTemporaryFile``'s API as used
    by ``decode_msg``: ``write``, ``file.flush``, ``name``, ``close``), plus :meth:`finish`."""

    def __init__(self, directory: Path):
        self.name = str(directory / f".rx.{os.getpid()}.{next(_names)}.tmp")  # .tmp: Store.recover clears it
        self.size = 0
        self.error: str | None = None
        self.direct = bool(getattr(os, "O_DIRECT", 0))
        self._fd: int | None = None
        self._buffer: mmap.mmap | None = None
        self._filled = 0
        self._finished = False
        try:
            self._fd = self._open()
        except OSError as exc:
            self.error = f"cannot create {self.name}: {exc.strerror or exc}"
        self._finalizer = weakref.finalize(self, _discard, self._fd, self.name)

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        if self.direct:
            try:
                return os.open(self.name, flags | os.O_DIRECT, 0o644)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.direct = False
        return os.open(self.name, flags, 0o644)

    # ---------------------------------------------------------------- what pynetdicom calls
    @property
    def file(self) -> "SpoolWriter":
        """pynetdicom calls ``.file.flush()`` after each fragment (a property: no reference cycle)."""
        return self

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; never raises (a disk error is kept for the handler, the rest dropped)."""
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                self._append(view)
            except OSError as exc:
                self.error = f"cannot write {self.name}: {exc.strerror or exc}"
        self.size += view.nbytes
        return view.nbytes

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
                self._write_tail()
            except OSError as exc:
                self.error = f"cannot write {self.name}: {exc.strerror or exc}"
            self._release_buffer()
        if self.error is not None:
            raise OSError(errno.EIO, self.error)
        return Path(self.name)

    def _append(self, view: memoryview) -> None:
        if not self.direct:
            self._drain()  # bytes staged before O_DIRECT was refused go first
            _write_all(self._fd, view)
            return
        if self._buffer is None:
            self._buffer = _take_buffer()
        done = 0
        while done < view.nbytes:
            n = min(CHUNK_BYTES - self._filled, view.nbytes - done)
            self._buffer[self._filled:self._filled + n] = view[done:done + n]
            self._filled += n
            done += n
            if self._filled == CHUNK_BYTES:
                self._write_staged(CHUNK_BYTES)
                self._filled = 0

    def _drain(self) -> None:
        """Staged bytes, unpadded, to a descriptor no longer in O_DIRECT mode."""
        if self._buffer is not None and self._filled:
            with memoryview(self._buffer) as staged:
                _write_all(self._fd, staged[:self._filled])
            self._filled = 0

    def _write_staged(self, length: int) -> None:
        """The first ``length`` staged bytes (a multiple of 4 KiB) to the O_DIRECT descriptor."""
        start = os.lseek(self._fd, 0, os.SEEK_CUR)
        with memoryview(self._buffer) as staged:
            try:
                _write_all(self._fd, staged[:length])
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: this filesystem refuses O_DIRECT after all
                    raise
                self.direct = False
                fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                _write_all(self._fd, staged[os.lseek(self._fd, 0, os.SEEK_CUR) - start:length])

    def _write_tail(self) -> None:
        if not self.direct:
            self._drain()
            return
        if not self._filled:
            return
        padded = -(-self._filled // _ALIGN) * _ALIGN
        self._buffer[self._filled:padded] = bytes(padded - self._filled)
        self._write_staged(padded)
        self._filled = 0
        os.ftruncate(self._fd, self.size)  # back to the received length (the fsync makes it durable)

    def _release_buffer(self) -> None:
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            with _pool_lock:
                if len(_pool) < _POOL_MAX:
                    _pool.append(buffer)
                    return
            buffer.close()


def _write_all(fd: int, view: memoryview) -> None:
    done = 0
    while done < view.nbytes:
        n = os.write(fd, view[done:])
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        done += n


def _take_buffer() -> mmap.mmap:
    with _pool_lock:
        if _pool:
            return _pool.pop()
    return mmap.mmap(-1, CHUNK_BYTES)  # anonymous mmap: page-aligned, as O_DIRECT needs


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
        raw = held.getbuffer()
        self.data_set = io.BytesIO(raw[144 + int.from_bytes(raw[140:144], "little"):])  # after the File Meta
        raw.release()
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
