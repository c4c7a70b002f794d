"""The node's configuration: one TOML file parsed once at start into frozen dataclasses.

Nothing else in the node reads the file or the environment later: every component gets the
:class:`Config` (or a part of it). Every validation failure raises :class:`ConfigError` whose
message is one line naming the file and the bad key, e.g.
``config/node.toml: [node] port must be an integer 1-65535, got "abc"``.

Relative paths (``[node] data_dir``, ``[reference] dir``, ``[http] token_file``) are resolved
against the directory of the config file; ``--data-dir`` on the command line is resolved
against the current directory.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword

from node.export.config import (  # noqa: F401 (re-exported)
    DESTINATION_TYPES, DestinationConfig, ExportConfig, parse_destinations, parse_export, parse_pacs,
)
from node.limits import LimitsConfig, RetentionConfig, parse_limits, parse_retention
from node.tls import TlsConfig, parse_tls
from node.dicom import NODE_MANUFACTURER, SC_SOP_CLASS_PREFIX, SR_SOP_CLASS_PREFIX
from node.toml_section import ConfigError, Section, path_value, resolve_path

__all__ = [
    "Config",
    "ConfigError",
    "DestinationConfig",
    "DiskConfig",
    "ExportConfig",
    "HttpConfig",
    "LimitsConfig",
    "RetentionConfig",
    "NodeConfig",
    "OutputsConfig",
    "ReferenceConfig",
    "RuleConfig",
    "RulesConfig",
    "SourceConfig",
    "StudyConfig",
    "load_config",
]


# The SR and SC storage classes the node itself produces; the default rules never analyse them.
SR_SC_SOP_CLASS_PATTERNS = (SR_SOP_CLASS_PREFIX + "*", SC_SOP_CLASS_PREFIX + "*")


@dataclass(frozen=True)
class NodeConfig:
    ae_title: str = "DXRNODE"
    bind: str = "127.0.0.1"
    """Loopback by default: opening the node to the network is a decision (README, "Opening it up")."""
    port: int = 11112
    data_dir: Path = Path("var")
    """Absolute path of the spool, SQLite database and outputs."""
    workers: int = 2
    max_associations: int = 10
    """Concurrent inbound associations (pynetdicom ``maximum_associations``)."""
    max_associations_per_host: int = 5
    """Concurrent inbound connections from one peer address; more are rejected (transient, logged)."""
    acse_timeout_seconds: float = 5.0
    """A connection that sends no A-ASSOCIATE-RQ within this is closed (its slot freed)."""
    network_timeout_seconds: float = 20.0
    """An association silent for this long is aborted."""
    dimse_timeout_seconds: float = 30.0
    job_timeout_seconds: float = 600.0
    """A job running longer is stopped (its worker is killed) and retried, then failed."""


@dataclass(frozen=True)
class StudyConfig:
    quiet_period_seconds: float = 10.0
    on_changed_duplicate: str = "replace"
    """A known SOP Instance UID with other bytes or another study: ``replace`` (kept, its study re-analysed,
    the new SR names the old as predecessor), ``keep`` (the first version stays) or ``reject`` (0x0111)."""


@dataclass(frozen=True)
class SourceConfig:
    ae_title: str
    host: str | None = None


@dataclass(frozen=True)
class RuleConfig:
    """One rule: DICOM keyword -> accepted patterns (case-insensitive fnmatch; "" = empty/absent)."""

    conditions: tuple[tuple[str, tuple[str, ...]], ...]
    name: str = ""


@dataclass(frozen=True)
class RulesConfig:
    analyse: tuple[RuleConfig, ...]
    ignore: tuple[RuleConfig, ...]


@dataclass(frozen=True)
class OutputsConfig:
    refusal_sr: str = "hands"
    """When nothing was measured: ``all`` (always an SR saying why), ``hands`` (only when an image
    shows a hand, by the analysis or BodyPartExamined) or ``none``. The old boolean is read as
    ``all``/``none`` (deprecated; logged at start)."""
    refusal_sr_was_bool: bool = False
    """Send an SR saying why nothing was measured when the analysis refused or failed."""
    picture: bool = True
    """Send the result picture (Secondary Capture) beside each SR."""
    institution_name: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    """Other ``[outputs]`` keys, passed through to ``node.report.OutputOptions`` when it knows them."""


@dataclass(frozen=True)
class ReferenceConfig:
    dir: Path | None = None
    """Folder of reference CSV tables (absolute), or None when not configured."""
    table: str | None = None
    """The reference set to use: ``<dir>/<table>.csv`` (None: every ``*.csv`` in ``dir``)."""


@dataclass(frozen=True)
class HttpConfig:
    """DICOMweb/health HTTP server; present only when ``[http]`` is in the file."""

    bind: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    token_file: Path | None = None
    max_body_bytes: int = 2 * 1024**3
    public_health: bool = False
    """``/readyz`` and ``/metrics`` answer without the token (``/healthz`` always does)."""
    max_connections: int = 64
    """Open HTTP connections; a new one beyond is closed at once (and logged)."""
    header_timeout_seconds: float = 10.0
    """A connection whose request headers are not complete this long after it opened (or after its
    last response: keep-alive) is closed."""


@dataclass(frozen=True)
class DiskConfig:
    min_free_bytes: int = 0
    """Below this free space on data_dir the node refuses new data (0 = never).

    The one default: a config without ``[disk]`` never refuses, so a test or bench config needs
    no disk section. The shipped ``config/node.toml`` and ``config/docker.toml`` set 1 GB, room
    for some tens of hand studies plus SQLite and outputs.
    """


@dataclass(frozen=True)
class Config:
    path: Path
    node: NodeConfig
    study: StudyConfig
    sources: tuple[SourceConfig, ...]
    destinations: tuple[DestinationConfig, ...]
    export: ExportConfig
    rules: RulesConfig
    outputs: OutputsConfig
    reference: ReferenceConfig
    disk: DiskConfig
    http: HttpConfig | None = None
    limits: LimitsConfig = LimitsConfig()
    retention: RetentionConfig = RetentionConfig()
    tls: TlsConfig | None = None
    pacs: tuple[DestinationConfig, ...] = ()
    """``[[pacs]]``: archives the node may query and retrieve from (``dxr-node request``, priors)."""

    @property
    def data_dir(self) -> Path:
        return self.node.data_dir

    @property
    def db_path(self) -> Path:
        return self.node.data_dir / "node.sqlite3"

    @property
    def spool_dir(self) -> Path:
        return self.node.data_dir / "spool"

    @property
    def outputs_dir(self) -> Path:
        return self.node.data_dir / "outputs"

    def summary(self, reference: Any = None) -> str:
        """``dxr-node check-config``'s two lines: the config, then the active reference set."""
        dests = ", ".join(f"{d.name} ({d.type}: {_sends(d)})" for d in self.destinations) or "none"
        active = reference.summary() if reference is not None else "none configured (T- and Z-scores will be omitted)"
        return (f"{self.path}: OK (ae_title {self.node.ae_title}, port {self.node.port}, data_dir {self.data_dir}, "
                f"{len(self.sources)} sources, destinations: {dests}, "
                f"reference tables: {'yes' if reference is not None else 'no'})\nreference: {active}")

    def destination(self, name: str) -> DestinationConfig:
        for dest in self.destinations:
            if dest.name == name:
                return dest
        known = ", ".join(d.name for d in self.destinations) or "none"
        raise ConfigError(f"{self.path}: no destination named {name!r} (configured: {known})")

    def pacs_named(self, name: str | None) -> DestinationConfig:
        """The ``[[pacs]]`` entry called ``name`` (None: the only one configured)."""
        if name is None and len(self.pacs) == 1:
            return self.pacs[0]
        for pacs in self.pacs:
            if pacs.name == name:
                return pacs
        if not self.pacs:
            raise ConfigError(f"{self.path}: no [[pacs]] configured (add one with name, ae_title, host, port)")
        known = ", ".join(p.name for p in self.pacs)
        if name is None:
            raise ConfigError(f"{self.path}: several [[pacs]] configured: say which with --from ({known})")
        raise ConfigError(f"{self.path}: no [[pacs]] named {name!r} (configured: {known})")


def _sends(dest: DestinationConfig) -> str:
    """What a destination gets, for ``check-config``: ``SR+SC+PDF``, or ``ORU^R01 with PDF``."""
    if dest.type == "hl7":
        return "ORU^R01" + (" with PDF" if dest.embed_pdf else "")
    return "+".join(dest.outputs)


DEFAULT_RULES = RulesConfig(
    analyse=(
        RuleConfig(
            conditions=(("Modality", ("CR", "DX")), ("BodyPartExamined", ("HAND", "WRIST", ""))),
            name="hand-wrist-radiograph",
        ),
    ),
    ignore=(
        RuleConfig(conditions=(("SOPClassUID", SR_SC_SOP_CLASS_PATTERNS),), name="sr-or-sc"),
        RuleConfig(conditions=(("Manufacturer", (NODE_MANUFACTURER,)),), name="own-output"),
    ),
)


def _parse_rules(cfg_path: Path, raw: Any) -> RulesConfig:
    if raw is None:
        return DEFAULT_RULES
    top = Section(cfg_path, "[rules]", raw, {"analyse", "ignore"})
    lists: dict[str, tuple[RuleConfig, ...]] = {}
    for kind in ("analyse", "ignore"):
        entries = top.table.get(kind, DEFAULT_RULES.analyse if kind == "analyse" else DEFAULT_RULES.ignore)
        if isinstance(entries, tuple):
            lists[kind] = entries
            continue
        if not isinstance(entries, list):
            top.fail(f"[rules] {kind} must be an array of tables ([[rules.{kind}]])")
        rules = []
        for i, entry in enumerate(entries):
            sec = Section(cfg_path, f"[[rules.{kind}]] #{i + 1}", entry, None)
            name = sec.str("name", f"{kind}-{i + 1}")
            conditions = []
            for keyword, patterns in entry.items():
                if keyword == "name":
                    continue
                if tag_for_keyword(keyword) is None:
                    sec.fail(f"{sec.name} {keyword} is not a DICOM keyword (e.g. Modality, BodyPartExamined)")
                if isinstance(patterns, str):
                    patterns = [patterns]
                if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns) or not patterns:
                    sec._bad(keyword, "a string or a non-empty list of strings", patterns)
                conditions.append((keyword, tuple(p.strip() for p in patterns)))
            if not conditions:
                sec.fail(f"{sec.name} has no condition (add e.g. Modality = [\"CR\", \"DX\"])")
            rules.append(RuleConfig(conditions=tuple(conditions), name=name))
        lists[kind] = tuple(rules)
    return RulesConfig(analyse=lists["analyse"], ignore=lists["ignore"])


def _parse_node(cfg_path: Path, base: Path, raw: dict, *, port: int | None, data_dir: str | Path | None) -> NodeConfig:
    n = Section(
        cfg_path, "[node]", raw.get("node", {}),
        {"ae_title", "bind", "port", "data_dir", "workers", "max_associations", "job_timeout_seconds",
         "max_associations_per_host", "acse_timeout_seconds", "network_timeout_seconds", "dimse_timeout_seconds"},
    )
    node = NodeConfig(
        ae_title=n.ae("ae_title", NodeConfig.ae_title),
        bind=n.str("bind", NodeConfig.bind),
        port=n.int("port", NodeConfig.port, 1, 65535),
        data_dir=resolve_path(base, n.str("data_dir", str(NodeConfig.data_dir))),
        workers=n.int("workers", NodeConfig.workers, 1, 64),
        max_associations=n.int("max_associations", NodeConfig.max_associations, 1, 1000),
        job_timeout_seconds=n.number("job_timeout_seconds", NodeConfig.job_timeout_seconds, 0.0, exclusive=True),
        max_associations_per_host=n.int("max_associations_per_host", NodeConfig.max_associations_per_host, 1, 1000),
        **{k: n.number(k, getattr(NodeConfig, k), 0.0, exclusive=True)
           for k in ("acse_timeout_seconds", "network_timeout_seconds", "dimse_timeout_seconds")},
    )
    if port is not None:
        if not 1 <= port <= 65535:
            raise ConfigError(f"--port must be an integer 1-65535, got {port}")
        node = replace(node, port=port)
    if data_dir is not None:
        node = replace(node, data_dir=Path(data_dir).expanduser().resolve())
    return node


def _parse_sources(cfg_path: Path, raw: dict) -> tuple[SourceConfig, ...]:
    raw_sources = raw.get("sources", [])
    if not isinstance(raw_sources, list):
        raise ConfigError(f"{cfg_path}: sources must be an array of tables ([[sources]])")
    sources = []
    for i, entry in enumerate(raw_sources):
        sec = Section(cfg_path, f"[[sources]] #{i + 1}", entry, {"ae_title", "host"})
        sources.append(SourceConfig(ae_title=sec.ae("ae_title", required=True), host=sec.str("host")))
    return tuple(sources)


REFUSAL_SR_MODES = ("all", "hands", "none")


def _refusal_sr_mode(o: Section) -> str:
    value = o.table.get("refusal_sr", OutputsConfig.refusal_sr)
    if isinstance(value, bool):  # the boolean of earlier releases
        return "all" if value else "none"
    if not isinstance(value, str) or value.strip().lower() not in REFUSAL_SR_MODES:
        o.fail(f'[outputs] refusal_sr must be "all", "hands" or "none", got {value!r}')
    return value.strip().lower()


def _parse_outputs(cfg_path: Path, raw: dict) -> OutputsConfig:
    o = Section(cfg_path, "[outputs]", raw.get("outputs", {}), None)
    extra = tuple((k, v) for k, v in o.table.items() if k not in {"refusal_sr", "picture", "institution_name"})
    outputs = OutputsConfig(
        refusal_sr=_refusal_sr_mode(o),
        refusal_sr_was_bool=isinstance(o.table.get("refusal_sr"), bool),
        picture=o.bool("picture", OutputsConfig.picture),
        institution_name=o.str("institution_name"),
        extra=extra,
    )
    return outputs


def _parse_reference(cfg_path: Path, base: Path, raw: dict) -> ReferenceConfig:
    r = Section(cfg_path, "[reference]", raw.get("reference", {}), {"dir", "table"})
    table = r.str("table")
    if table is not None and (not table or "/" in table or "\\" in table or table.startswith(".")):
        r.fail(f"[reference] table must be a file name in [reference] dir without .csv, got {table!r}")
    return ReferenceConfig(dir=path_value(r, "dir", base), table=table)


def _parse_http(cfg_path: Path, base: Path, raw: dict) -> HttpConfig | None:
    http = None
    if "http" in raw:
        h = Section(cfg_path, "[http]", raw["http"], {"bind", "port", "token", "token_file", "max_body_bytes",
                                                      "max_connections", "header_timeout_seconds", "public_health"})
        token_file = path_value(h, "token_file", base)
        http = HttpConfig(
            bind=h.str("bind", HttpConfig.bind),
            port=h.int("port", HttpConfig.port, 1, 65535),
            token=h.str("token"),
            token_file=token_file,
            max_body_bytes=h.int("max_body_bytes", HttpConfig.max_body_bytes, 1),
            public_health=h.bool("public_health", HttpConfig.public_health),
            max_connections=h.int("max_connections", HttpConfig.max_connections, 1, 100_000),
            header_timeout_seconds=h.number("header_timeout_seconds", HttpConfig.header_timeout_seconds, 0.0,
                                            exclusive=True),
        )
    return http


def load_config(path: str | Path, *, port: int | None = None, data_dir: str | Path | None = None) -> Config:
    """Read and validate the TOML config; ``port``/``data_dir`` override the file (CLI flags).

    A key the file leaves out takes the dataclass field's default (one place for each default).

    Raises
    ------
    ConfigError
        One line naming the file and the bad key.
    """
    cfg_path = Path(path)
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{cfg_path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{cfg_path}: cannot read config file ({exc})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{cfg_path}: not valid TOML ({exc})") from None
    base = cfg_path.resolve().parent

    known_top = {"node", "study", "sources", "destinations", "export", "rules", "outputs", "reference", "http", "disk", "limits",
                 "retention", "tls", "pacs"}
    for key in raw:
        if key not in known_top:
            raise ConfigError(f"{cfg_path}: unknown section or key {key!r} (known: {', '.join(sorted(known_top))})")

    node = _parse_node(cfg_path, base, raw, port=port, data_dir=data_dir)
    s = Section(cfg_path, "[study]", raw.get("study", {}), {"quiet_period_seconds", "on_changed_duplicate"})
    study = StudyConfig(quiet_period_seconds=s.number("quiet_period_seconds", StudyConfig.quiet_period_seconds, 0.0),
                        on_changed_duplicate=s.str("on_changed_duplicate", StudyConfig.on_changed_duplicate))
    if study.on_changed_duplicate not in ("replace", "keep", "reject"):
        s._bad("on_changed_duplicate", '"replace", "keep" or "reject"', study.on_changed_duplicate)
    return Config(
        path=cfg_path,
        node=node,
        study=study,
        sources=_parse_sources(cfg_path, raw),
        destinations=parse_destinations(cfg_path, base, raw, node.data_dir),
        export=parse_export(cfg_path, raw),
        rules=_parse_rules(cfg_path, raw.get("rules")),
        outputs=_parse_outputs(cfg_path, raw),
        reference=_parse_reference(cfg_path, base, raw),
        disk=DiskConfig(min_free_bytes=Section(cfg_path, "[disk]", raw.get("disk", {}), {"min_free_bytes"}).int(
            "min_free_bytes", DiskConfig.min_free_bytes, 0)),
        http=_parse_http(cfg_path, base, raw),
        limits=parse_limits(cfg_path, raw),
        retention=parse_retention(cfg_path, raw),
        tls=parse_tls(cfg_path, base, raw),
        pacs=parse_pacs(cfg_path, base, raw, node.data_dir),
    )
