"""Output options: how the SR and SC name their maker and which objects to build, from ``[outputs]``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import analysis
from node.config import Config, ConfigError
from node.dicom import NODE_MANUFACTURER

__all__ = ["OutputOptions", "output_options"]

log = logging.getLogger("dxr.worker")


@dataclass(frozen=True)
class OutputOptions:
    """How the SR and SC describe their maker, and which objects to build.

    ``refusal_sr``: when nothing could be measured, ``"all"`` (always an SR saying why),
    ``"hands"`` (only when some image shows a hand) or ``"none"``; True/False mean all/none.
    ``picture``: write the SC result picture next to each SR.
    """

    manufacturer: str = NODE_MANUFACTURER
    device_name: str = "DXR Node"
    software_version: str = analysis.ANALYSIS_VERSION
    institution_name: str | None = None
    refusal_sr: str | bool = "hands"
    picture: bool = True
    pdf: bool = False
    """Build the encapsulated PDF report beside each SR (the node: when a destination takes ``PDF``)."""
    reference: Any = None
    """``analysis.reference.ReferenceTables`` for the picture's BMD-vs-age chart (None: no curve)."""
    uid_root: str | None = None
    """``[outputs] uid_root``: the organisation's UID root for output SOP Instance and Series UIDs."""
    installation_uid: str = ""
    """The node installation UID (data_dir); part of the series UIDs (the seed carries it for the rest)."""
    history: Any = None
    """Earlier DXR-BMD results of the patient from this node's database (the picture's trend)."""


def output_options(config: Config, reference: Any = None, *, strict: bool = False,
                   installation_uid: str = "") -> OutputOptions:
    """:class:`OutputOptions` from ``[outputs]``.

    ``reference``: the loaded reference tables, for the SC picture's BMD-vs-age chart.
    ``strict``: an ``[outputs]`` key that is not an output option (or has the wrong type) raises
    :class:`node.config.ConfigError` naming it (serve and check-config validate at start);
    otherwise it is ignored with a log line.
    """
    fields = {f.name: f for f in dataclasses.fields(OutputOptions)}
    names = set(fields) - {"reference", "installation_uid", "history", "pdf"}
    values: dict[str, Any] = {"refusal_sr": config.outputs.refusal_sr, "picture": config.outputs.picture}
    if config.outputs.institution_name:
        values["institution_name"] = config.outputs.institution_name
    for key, value in config.outputs.extra:
        default = fields[key].default if key in names else None
        if key in names and (default is None or default is dataclasses.MISSING or isinstance(value, type(default))):
            values[key] = value
        elif strict:
            why = (f"must be a {type(default).__name__}, got {value!r}" if key in names
                   else f"is not an output option (known: {', '.join(sorted(names))})")
            raise ConfigError(f"{config.path}: [outputs] {key} {why}")
        else:
            log.warning("event=config_ignored key=[outputs].%s reason='not an output option of this build'", key)
    if config.outputs.refusal_sr_was_bool and strict:
        log.warning("event=config_deprecated key=[outputs].refusal_sr value=%s reading=%s "
                    "detail='a boolean is deprecated: use \"all\", \"hands\" or \"none\"'",
                    str(config.outputs.refusal_sr == "all").lower(), config.outputs.refusal_sr)
    if reference is not None:
        values["reference"] = reference
    uid_root = values.get("uid_root")
    if uid_root is not None and not _valid_root(uid_root):
        message = f"{config.path}: [outputs] uid_root must be a UID root like 1.2.826.0.1.3680043.10.123 (at most 40 characters), got {uid_root!r}"
        if strict:
            raise ConfigError(message)
        log.warning("event=config_ignored key=[outputs].uid_root reason=%r", message)
        values.pop("uid_root")
    result = OutputOptions(**{k: v for k, v in values.items() if k in names})
    wants_pdf = any("PDF" in d.outputs or d.embed_pdf for d in config.destinations)
    return dataclasses.replace(result, reference=values.get("reference"), installation_uid=installation_uid,
                               pdf=wants_pdf)


def _valid_root(root: str) -> bool:
    """Digits and dots, no leading zeros, at most 40 characters (room for a 24-digit suffix within 64)."""
    parts = root.split(".")
    return (0 < len(root) <= 40 and all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts))
