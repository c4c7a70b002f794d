"""Configuration of the export side: ``[[destinations]]`` (where results go) and ``[export]`` (retries)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from node.toml_section import ConfigError, Section, resolve_path

__all__ = ["DESTINATION_TYPES", "PACS_TYPES", "DestinationConfig", "ExportConfig", "parse_destinations", "parse_export",
           "parse_pacs"]

DESTINATION_TYPES = ("dimse", "folder", "dicomweb")
PACS_TYPES = ("dimse", "dicomweb")
"""What ``[[pacs]]`` (where studies are retrieved from) may be: a DIMSE Q/R SCP or a QIDO-RS/WADO-RS server."""


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
                 "tls"}
    if "folder" not in types:
        dest_keys.discard("path")
    for i, entry in enumerate(raw_dests):
        sec = Section(cfg_path, f"[[{key}]] #{i + 1}", entry, dest_keys)
        name = sec.str("name", required=True)
        sec.name = f"[[{key}]] {name!r}"
        if any(d.name == name for d in destinations):
            sec.fail(f"{sec.name} name is used twice; {key} names must be unique")
        dtype = sec.str("type", "dimse")
        if dtype not in types:
            sec._bad("type", " or ".join(f'"{t}"' for t in types), dtype)
        if dtype == "dimse":
            dest = DestinationConfig(
                name=name,
                type=dtype,
                ae_title=sec.ae("ae_title", required=True),
                host=sec.str("host", required=True),
                port=sec.int("port", None, 1, 65535, required=True),
                tls=sec.bool("tls", False),
            )
        elif dtype == "folder":
            dest = DestinationConfig(name=name, type=dtype, path=data_dir / "outbox")
            if "path" in entry:
                p = Path(sec.str("path")).expanduser()
                dest = replace(dest, path=p if p.is_absolute() else data_dir / p)
        else:
            token_file = sec.str("token_file")
            dest = DestinationConfig(
                name=name,
                type=dtype,
                url=sec.str("url", required=True),
                token=sec.str("token"),
                token_file=resolve_path(base, token_file) if token_file else None,
                username=sec.str("username"),
                password=sec.str("password", allow_empty=True),
            )
        destinations.append(dest)
    return tuple(destinations)


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
