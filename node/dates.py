"""Dates typed by people (CLI flags, the web form's request field): one parser for every verb."""

from __future__ import annotations

import datetime as dt

__all__ = ["user_date"]

FORMATS = ("%Y-%m-%d", "%Y%m%d")
"""``2026-03-05`` or ``20260305`` (the DICOM DA form)."""


def user_date(text: str, flag: str) -> dt.date:
    """``YYYY-MM-DD`` or ``YYYYMMDD`` as a calendar date.

    Raises
    ------
    ValueError
        Not a real date in either form (``2026-02-30`` too), with a message naming ``flag``.
    """
    for fmt in FORMATS:
        try:
            return dt.datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            pass
    raise ValueError(f"{flag} must be a date YYYY-MM-DD, got {text!r}")
