"""One line per event on stderr: ``<UTC time> <LEVEL> <component> event=<name> key=value ...``.

Lines carry AE titles, UIDs, states and reasons; never patient names or other patient data.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time

__all__ = ["setup_logging"]


# Control characters (NUL from a hostile AE title or header value, ESC, ...) never reach the log raw.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def _escape(match: re.Match) -> str:
    return f"\\x{ord(match.group()):02x}"


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        # Libraries (pydicom's decoders) log tracebacks; keep them on the record's one line.
        return _CONTROL.sub(_escape, super().format(record).replace("\r", "").replace("\n", " | "))


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("dxr.thread").error("event=thread_died thread=%s error=%r", name,
                                          f"{args.exc_type.__name__}: {args.exc_value}",
                                          exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def setup_logging(level: int = logging.INFO, *, process_name: str | None = None) -> None:
    """Log to stderr, one line per record; safe to call again (in worker processes too)."""
    fmt = "%(asctime)s %(levelname)s %(name)s"
    if process_name:
        fmt += f"[{process_name}]"
    fmt += ": %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UTCFormatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # warnings.warn (pydicom's "Invalid value for VR ...") as log records, not raw multi-line stderr.
    logging.captureWarnings(True)
    # An exception that ends a library thread (a pynetdicom reactor) is one record too, not a raw traceback.
    threading.excepthook = _thread_exception
    # pynetdicom logs every PDU at INFO; our handlers log the events that matter.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("highdicom").setLevel(logging.WARNING)
