"""A safe fallback for source headers the output builders cannot carry (issue 12, D3).

The SR and SC copy the patient and study modules from the source image. A header with an
unknown Specific Character Set (``NOT_A_CHARSET``), an invalid date or an over-long or
malformed name makes the builders raise; the study would then produce nothing, not even a
refusal SR. :func:`make_header_safe` repairs such a data set in place so the outputs can be
built: the text is decoded as pydicom can (its fallback encoding), re-declared as UTF-8
(``ISO_IR 192``), and each top-level text value that does not validate is cleaned (control
characters out, clipped to the VR's length) or, for dates and times, emptied.
"""

from __future__ import annotations

import re
import warnings

import pydicom.charset
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.valuerep import validate_value

__all__ = ["make_header_safe"]

_TEXT_VRS = {"AE": 16, "CS": 16, "LO": 64, "SH": 16, "PN": 64, "ST": 1024, "LT": 10240, "UC": 0, "UT": 0}
_DROP_VRS = {"DA", "TM", "DT", "AS"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _valid(vr: str, value: object) -> bool:
    try:
        values = value if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
        for v in values:
            validate_value(vr, v, pydicom_config.RAISE)
        return True
    except Exception:
        return False


def _clean(vr: str, value: object) -> str:
    text = _CONTROL.sub("", str(value))
    if vr == "PN":
        groups = text.split("=")[:3]
        text = "=".join("^".join(c[:64] for c in g.split("^")[:5]) for g in groups)
    elif vr == "CS":
        text = re.sub(r"[^A-Z0-9 _]", "_", text.upper())[:16]
    elif _TEXT_VRS[vr]:
        text = text.replace("\\", "/")[:_TEXT_VRS[vr]]
    return text


def make_header_safe(ds: Dataset) -> list[str]:
    """Repair ``ds`` in place for the output builders; returns what was changed (keywords), for the log."""
    changed = []
    charsets = ds.get("SpecificCharacterSet")
    values = [charsets] if isinstance(charsets, str) else list(charsets or [])
    if any(v and v not in pydicom.charset.python_encoding for v in values):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns for the unknown set and uses its fallback
            ds.decode()
        ds.SpecificCharacterSet = "ISO_IR 192"
        changed.append("SpecificCharacterSet")
    for elem in list(ds):
        if elem.VR in _DROP_VRS | set(_TEXT_VRS) and elem.value not in (None, "") and not _valid(elem.VR, elem.value):
            keyword = elem.keyword or str(elem.tag)
            if elem.VR in _DROP_VRS:
                elem.value = ""  # empty, not absent: the builders read the Type 2 study date
            else:
                vm = elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]
                cleaned = [_clean(elem.VR, v) for v in vm]
                elem.value = cleaned if len(cleaned) > 1 else cleaned[0]
            changed.append(keyword)
    return changed
