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
    reference: Any = None
    """``analysis.reference.ReferenceTables`` for the picture's BMD-vs-age chart (None: no curve)."""


def output_options(config: Config, reference: Any = None, *, strict: bool = False) -> OutputOptions:
    """:class:`OutputOptions` from ``[outputs]``.

    ``reference``: the loaded reference tables, for the SC picture's BMD-vs-age chart.
    ``strict``: an ``[outputs]`` key that is not an output option (or has the wrong type) raises
    :class:`node.config.ConfigError` naming it (serve and check-config validate at start);
    otherwise it is ignored with a log line.
    """
    fields = {f.name: f for f in dataclasses.fields(OutputOptions)}
    names = set(fields) - {"reference"}
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
    return OutputOptions(**{k: v for k, v in values.items() if k in names})
