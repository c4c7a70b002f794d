"""A streaming multipart/related parser (RFC 2046) for STOW-RS bodies, and Content-Type parsing."""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message

__all__ = ["MAX_PART_HEADER_BYTES", "MultipartError", "MultipartParser", "content_type"]

MAX_PART_HEADER_BYTES = 16 * 1024
"""A part's MIME header block larger than this is malformed (400)."""


class MultipartError(ValueError):
    """The body is not well-formed multipart (missing boundary, bad part headers, cut short)."""


class MultipartParser:
    """Incremental multipart parser (RFC 2046) that hands out part bodies as they stream.

    Feed chunks with :meth:`feed`; it calls ``on_part_begin(headers)``, ``on_part_data(bytes)``
    (any number of times) and ``on_part_end()``. :meth:`close` checks that the closing
    delimiter was seen. Memory use is one chunk plus the delimiter length.

    Parameters
    ----------
    boundary
        The ``boundary`` parameter of the request's Content-Type (bytes).
    """

    _PREAMBLE, _HEADERS, _BODY, _DONE = range(4)

    def __init__(
        self,
        boundary: bytes,
        on_part_begin: Callable[[dict[str, str]], None],
        on_part_data: Callable[[bytes], None],
        on_part_end: Callable[[], None],
    ) -> None:
        if not boundary or len(boundary) > 200:
            raise MultipartError("the multipart boundary is missing or longer than 200 characters")
        # A CRLF is virtually prepended to the body, so the first delimiter needs no special case.
        self._delimiter = b"\r\n--" + boundary
        self._buf = bytearray(b"\r\n")
        self._state = self._PREAMBLE
        self._on_begin, self._on_data, self._on_end = on_part_begin, on_part_data, on_part_end
        self.parts = 0

    @property
    def done(self) -> bool:
        return self._state == self._DONE

    def feed(self, chunk: bytes) -> None:
        if self._state == self._DONE:
            return  # epilogue: ignored (RFC 2046)
        self._buf += chunk
        while True:
            if self._state == self._PREAMBLE or self._state == self._BODY:
                at = self._buf.find(self._delimiter)
                if at < 0:
                    # Keep enough bytes to match a delimiter split over two chunks.
                    keep = len(self._delimiter) - 1
                    if self._state == self._BODY and len(self._buf) > keep:
                        self._on_data(bytes(self._buf[:-keep]))
                        del self._buf[:-keep]
                    elif self._state == self._PREAMBLE and len(self._buf) > keep:
                        del self._buf[:-keep]
                    return
                after = at + len(self._delimiter)
                if len(self._buf) < after + 2:
                    return  # need the two bytes after the delimiter ("--" or CRLF/padding)
                if self._state == self._BODY:
                    if at:
                        self._on_data(bytes(self._buf[:at]))
                    self._on_end()
                if self._buf[after:after + 2] == b"--":
                    self._state = self._DONE
                    self._buf.clear()
                    return
                # Transport padding (spaces/tabs) may follow a delimiter before its CRLF.
                eol = self._buf.find(b"\r\n", after)
                if eol < 0:
                    if len(self._buf) - after > 1024:
                        raise MultipartError("a multipart delimiter line is not terminated by CRLF")
                    return
                if self._buf[after:eol].strip(b" \t"):
                    raise MultipartError("unexpected characters after a multipart delimiter")
                del self._buf[:eol + 2]
                self._state = self._HEADERS
            elif self._state == self._HEADERS:
                end = self._buf.find(b"\r\n\r\n")
                if end < 0 and self._buf.startswith(b"\r\n"):
                    end = -2  # a part with no header lines at all
                # The limit holds whatever the chunking: a whole oversized block in one chunk too.
                if (end == -1 and len(self._buf) > MAX_PART_HEADER_BYTES) or end > MAX_PART_HEADER_BYTES:
                    raise MultipartError("a part's headers exceed 16 KiB")
                if end == -1:
                    return
                block = bytes(self._buf[:max(end, 0)])
                del self._buf[:end + 4]
                self._on_begin(_parse_part_headers(block))
                self.parts += 1
                self._state = self._BODY

    def close(self) -> None:
        """Raise :class:`MultipartError` unless the closing delimiter has been seen."""
        if self._state != self._DONE:
            if self._state == self._PREAMBLE:
                raise MultipartError("no multipart part with the declared boundary was found")
            raise MultipartError("the body ended before the closing multipart delimiter (truncated request)")


def _parse_part_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    try:
        text = block.decode("ascii")
    except UnicodeDecodeError:
        raise MultipartError("a part's headers are not ASCII") from None
    for line in text.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MultipartError(f"malformed part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def content_type(value: str) -> tuple[str, dict[str, str]]:
    """``(media type lowercased, {param: value})`` of a Content-Type header value."""
    msg = Message()
    msg["content-type"] = value
    params = msg.get_params(header="content-type") or []
    return msg.get_content_type().lower(), {k.lower(): v for k, v in params[1:]}
