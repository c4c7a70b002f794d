"""Character sets: the text the node adds, made to fit the Specific Character Set copied from the source.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import pydicom.charset
from pydicom.dataset import Dataset

__all__ = ['OWN_TEXT_ATTRIBUTES', 'clip_ut', 'fit_charset', 'fit_own_text']

_ASCII_FALLBACKS = {"\u2014": "-", "\u2013": "-", "\u2212": "-", "\u2265": ">=", "\u2264": "<=",
                    "\u00b1": "+/-", "\u00b2": "2", "\u00b7": "-", "\u2019": "'", "\u201c": '"', "\u201d": '"'}


def fit_charset(text: str, charset) -> str:
    """``text`` as the output's Specific Character Set can carry it.

    Outputs copy the source's character set (so patient names round-trip); text this module
    adds (reference names, messages, configured names) is transliterated to ASCII when that
    set cannot encode it. No character set (the default repertoire) means ASCII.
    """
    values = [charset] if isinstance(charset, str) else list(charset or [])
    codecs = pydicom.charset.convert_encodings(values) if any(values) else ["ascii"]
    codecs = ["ascii" if c == "iso8859" else c for c in codecs]  # pydicom's lenient default
    def encodable(candidate: str) -> bool:
        for codec in codecs:
            try:
                candidate.encode(codec)
                return True
            except (UnicodeEncodeError, LookupError):
                continue
        return False

    if encodable(text):
        return text
    for char, plain in _ASCII_FALLBACKS.items():
        text = text.replace(char, plain)
    if encodable(text):
        return text
    kept = "".join(c if encodable(c) else unicodedata.normalize("NFKD", c) for c in text)
    return kept.encode("ascii", "ignore").decode("ascii") if not encodable(kept) else kept


def fit_own_text(ds: Dataset, keywords: Sequence[str]) -> None:
    """Apply :func:`fit_charset` to the attributes named and every TEXT content item."""
    charset = ds.get("SpecificCharacterSet")
    for keyword in keywords:
        if ds.get(keyword):
            ds[keyword].value = fit_charset(str(ds[keyword].value), charset)
    stack = list(ds.get("ContentSequence", []))
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "TEXT" and "TextValue" in item:
            item.TextValue = fit_charset(item.TextValue, charset)
        stack.extend(item.get("ContentSequence", []))

OWN_TEXT_ATTRIBUTES = ("Manufacturer", "InstitutionName", "ManufacturerModelName", "SoftwareVersions",
                       "SeriesDescription", "ImageComments")


def clip_ut(text: str) -> str:
    return text if len(text) < 1024 else text[:1020] + "..."
