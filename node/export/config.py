"""Configuration of the export side: ``[[destinations]]`` (where results go) and ``[export]`` (retries)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from node.toml_section import ConfigError, Section, resolve_path

__all__ = ["DESTINATION_TYPES", "PACS_TYPES", "DestinationConfig", "ExportConfig", "OUTPUT_KINDS",
           "parse_destinations", "parse_export", "parse_pacs"]

DESTINATION_TYPES = ("dimse", "folder", "dicomweb", "hl7")
PACS_TYPES = ("dimse", "dicomweb")
"""What ``[[pacs]]`` (where studies are retrieved from) may be: a DIMSE Q/R SCP or a QIDO-RS/WADO-RS server."""
OUTPUT_KINDS = ("SR", "SC", "PDF")
"""What a DICOM destination's ``outputs`` may list: the SR, the SC result picture, the encapsulated PDF report."""
DEFAULT_OUTPUTS = ("SR", "SC")
HL7_KEYS = frozenset({"sending_application", "sending_facility", "receiving_application", "receiving_facility",
                      "embed_pdf", "ack_timeout_seconds"})
HL7_FIELD_RE = re.compile(r"^[^|^~\\&\r\n]{1,180}$")
"""An HL7 HD value we write as it is: none of the delimiters ``| ^ ~ \\ &`` nor a line break."""


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    type: str = "dimse"
    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    path: Path | None = None
    """Folder destinations: absolute output folder (default ``<data_dir>/outbox``)."""
    url: str | None = None
    """DICOMweb destinations: the STOW-RS base URL."""
    token: str | None = None
    token_file: Path | None = None
    username: str | None = None
    password: str | None = None
    tls: bool = False
    """DIMSE destinations: reached over TLS ([tls] ca_certificates verifies the peer)."""
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    """The output kinds this destination gets (``SR``, ``SC``, ``PDF``); an HL7 destination: ``("SR",)``,
    one ORU^R01 per SR."""
    sending_application: str = "DXRNODE"
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    embed_pdf: bool = False
    """HL7: the PDF report of the result as an ED OBX (base64)."""
    ack_timeout_seconds: float = 30.0
    """HL7: how long to wait for the connection and the ACK."""


@dataclass(frozen=True)
class ExportConfig:
    retry_base_delay_seconds: float = 5.0
    retry_max_delay_seconds: float = 300.0
    max_attempts: int = 8
    calling_ae_title: str | None = None
    """AE title the node uses when it sends; defaults to ``[node] ae_title``."""

    def delay_seconds(self, attempts: int) -> float:
        """Backoff before the next attempt after ``attempts`` failed ones (seconds)."""
        return min(self.retry_base_delay_seconds * 2 ** max(attempts - 1, 0), self.retry_max_delay_seconds)


def parse_pacs(cfg_path: Path, base: Path, raw: dict, data_dir: Path) -> tuple[DestinationConfig, ...]:
    """``[[pacs]]``: the archives studies can be requested from (``dxr-node request --from NAME``).

    Same keys as a DIMSE or DICOMweb destination (``url`` is then the QIDO-RS/WADO-RS root)."""
    return parse_destinations(cfg_path, base, raw, data_dir, key="pacs", types=PACS_TYPES)


def parse_destinations(cfg_path: Path, base: Path, raw: dict, data_dir: Path, *, key: str = "destinations",
                       types: tuple[str, ...] = DESTINATION_TYPES) -> tuple[DestinationConfig, ...]:
    """The array of tables ``[[key]]`` as peers of the given ``types`` (``[[destinations]]`` by default)."""
    raw_dests = raw.get(key, [])
    if not isinstance(raw_dests, list):
        raise ConfigError(f"{cfg_path}: {key} must be an array of tables ([[{key}]])")
    destinations: list[DestinationConfig] = []
    dest_keys = {"name", "type", "ae_title", "host", "port", "path", "url", "token", "token_file", "username", "password",
                 "tls", "outputs", "sending_application", "sending_facility", "receiving_application",
                 "receiving_facility", "embed_pdf", "ack_timeout_seconds"}
    if "folder" not in types:
        dest_keys.discard("path")
    if "hl7" not in types:  # [[pacs]]: peers to retrieve from, nothing is sent to them
        dest_keys -= HL7_KEYS | {"outputs"}
    for i, entry in enumerate(raw_dests):
        sec = Section(cfg_path, f"[[{key}]] #{i + 1}", entry, dest_keys)
        name = sec.str("name", required=True)
        sec.name = f"[[{key}]] {name!r}"
        if any(d.name == name for d in destinations):
            sec.fail(f"{sec.name} name is used twice; {key} names must be unique")
        dtype = sec.str("type", "dimse")
        if dtype not in types:
            sec._bad("type", " or ".join(f'"{t}"' for t in types), dtype)
        dest = _destination(sec, name, dtype, entry, base, data_dir)
        if dtype != "hl7":
            dest = replace(dest, outputs=_outputs(sec))
            for hl7_key in sorted(HL7_KEYS & set(entry)):
                sec.fail(f'{sec.name} {hl7_key} is a key of type = "hl7" destinations only')
        elif "outputs" in entry:
            sec.fail(f"{sec.name} outputs is not an hl7 key: an hl7 destination gets one ORU^R01 per SR "
                     "(embed_pdf = true adds the PDF report)")
        destinations.append(dest)
    return tuple(destinations)


def _destination(sec: Section, name: str, dtype: str, entry: dict, base: Path, data_dir: Path) -> DestinationConfig:
    """The type-specific keys of one ``[[destinations]]`` entry."""
    if dtype == "dimse":
        return DestinationConfig(
            name=name, type=dtype, ae_title=sec.ae("ae_title", required=True), host=sec.str("host", required=True),
            port=sec.int("port", None, 1, 65535, required=True), tls=sec.bool("tls", False),
        )
    if dtype == "folder":
        dest = DestinationConfig(name=name, type=dtype, path=data_dir / "outbox")
        if "path" in entry:
            p = Path(sec.str("path")).expanduser()
            dest = replace(dest, path=p if p.is_absolute() else data_dir / p)
        return dest
    if dtype == "hl7":
        return DestinationConfig(
            name=name, type=dtype, host=sec.str("host", required=True),
            port=sec.int("port", None, 1, 65535, required=True), outputs=("SR",),
            sending_application=_hd(sec, "sending_application", "DXRNODE"),
            sending_facility=_hd(sec, "sending_facility", ""),
            receiving_application=_hd(sec, "receiving_application", ""),
            receiving_facility=_hd(sec, "receiving_facility", ""),
            embed_pdf=sec.bool("embed_pdf", False),
            ack_timeout_seconds=sec.number("ack_timeout_seconds", DestinationConfig.ack_timeout_seconds, 0.0,
                                           exclusive=True),
        )
    token_file = sec.str("token_file")
    return DestinationConfig(
        name=name, type=dtype, url=sec.str("url", required=True), token=sec.str("token"),
        token_file=resolve_path(base, token_file) if token_file else None,
        username=sec.str("username"), password=sec.str("password", allow_empty=True),
    )


def _hd(sec: Section, key: str, default: str) -> str:
    """An HL7 application/facility name (MSH-3 to MSH-6): free of HL7 delimiters."""
    value = sec.str(key, default)
    if value and not HL7_FIELD_RE.match(value):
        sec._bad(key, "1-180 characters without the HL7 delimiters | ^ ~ \\ & or a line break", value)
    return value


def _outputs(sec: Section) -> tuple[str, ...]:
    """``outputs = ["SR", "SC", "PDF"]``: which outputs the destination gets (default SR and SC)."""
    if "outputs" not in sec.table:
        return DEFAULT_OUTPUTS
    value = sec.table["outputs"]
    if (not isinstance(value, list) or not value or any(v not in OUTPUT_KINDS for v in value)
            or len(set(value)) != len(value)):
        sec._bad("outputs", "a list of distinct names from " + ", ".join(f'"{k}"' for k in OUTPUT_KINDS), value)
    return tuple(value)


def parse_export(cfg_path: Path, raw: dict) -> ExportConfig:
    e = Section(cfg_path, "[export]", raw.get("export", {}), {"retry_base_delay_seconds", "retry_max_delay_seconds", "max_attempts", "calling_ae_title"})
    export = ExportConfig(
        retry_base_delay_seconds=e.number("retry_base_delay_seconds", ExportConfig.retry_base_delay_seconds, 0.0),
        retry_max_delay_seconds=e.number("retry_max_delay_seconds", ExportConfig.retry_max_delay_seconds, 0.0),
        max_attempts=e.int("max_attempts", ExportConfig.max_attempts, 1, 1000),
        calling_ae_title=e.ae("calling_ae_title"),
    )
    if export.retry_max_delay_seconds < export.retry_base_delay_seconds:
        e.fail("[export] retry_max_delay_seconds must be >= retry_base_delay_seconds")
    return export
