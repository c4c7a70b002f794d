"""Real servers for integration tests: Orthanc, the DXR node, DCMTK command-line tools.

Everything listens on free loopback ports and lives in a temporary directory; every process
is started by this module and stopped by its PID (never by name).

Typical use (see ``conftest.py`` for the shared fixtures)::

    with OrthancServer(tmp / "pacs", node_aet="DXRNODE") as pacs:      # PACS with Lua routing
        node = NodeProcess(tmp / "node", destinations=[pacs.as_destination()])
        node.start()
        pacs.route_to_node(node)              # CR/DX stored in Orthanc go to the node
        storescu(files, pacs.dicom_port, called=pacs.aet)
        srs = pacs.wait_for_instances(study_uid, lambda i: i.modality == "SR")
        node.stop()

``OrthancServer(dir, dicomweb=True)`` loads the DICOMweb plugin; ``pacs.dicomweb_url`` is
then the QIDO/WADO/STOW root (``http://127.0.0.1:PORT/dicom-web``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

ORTHANC_PLUGINS_DIR = Path("/usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = ORTHANC_PLUGINS_DIR / "libOrthancDicomWeb.so"

# Loopback only: the tests never listen on a routable address.
HOST = "127.0.0.1"

# Deadline for a node result to appear (seconds). Generous on purpose: the first analysis in a
# fresh worker may compile numba kernels on a loaded 2-core machine. Passing tests never wait it out.
RESULT_TIMEOUT_SECONDS = 180.0

# AE title the harness uses as a DICOM client towards the node (allow-listed by NodeProcess).
TEST_SCU_AET = "TESTSCU"

# SOP classes that Orthanc forwards to the node (CR and DX, for presentation and processing).
CR_DX_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
)
SR_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
)


# --------------------------------------------------------------------------------------------
# Ports, binaries, small helpers
# --------------------------------------------------------------------------------------------


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
"""Debian's chromium, which Playwright drives headless (its own browser download is not reachable)."""


def browser_missing() -> str | None:
    """Why a headless-browser test cannot run here (no chromium, no Playwright), or None."""
    if CHROMIUM is None:
        return "Debian chromium is not installed (make debs)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python) is not installed (make venv)"
    return None


def free_port() -> int:
    """Return a TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def find_binary(name: str, *fallbacks: str) -> str | None:
    """Path of an executable on PATH or at one of ``fallbacks``, else None."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in fallbacks:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def orthanc_binary() -> str | None:
    return find_binary("Orthanc", "/usr/sbin/Orthanc", "/usr/bin/Orthanc")


def node_binary() -> Path:
    """The ``dxr-node`` console script of the running interpreter's environment."""
    return Path(sys.executable).parent / "dxr-node"


def missing_tools(*, orthanc: bool = True, dcmtk: bool = True, node: bool = True) -> list[str]:
    """Names of the external programs the integration tests need that are not installed."""
    missing = []
    if orthanc and orthanc_binary() is None:
        missing.append("Orthanc (Debian package orthanc)")
    if dcmtk:
        missing += [f"{t} (Debian package dcmtk)" for t in ("storescu", "echoscu") if not shutil.which(t)]
    if node and not node_binary().exists():
        missing.append(f"dxr-node console script ({node_binary()}; run `make venv`)")
    return missing


def wait_until(predicate: Callable[[], Any], timeout_seconds: float, *, interval_seconds: float = 0.1,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; return it, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_seconds:.1f} s waiting for {what}")
        time.sleep(interval_seconds)


def _tail(path: Path, n_lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n_lines:])
    except OSError:
        return "(no log)"


def _terminate(proc: subprocess.Popen, *, sig: int = signal.SIGTERM, grace_seconds: float = 10.0) -> bool:
    """Stop ``proc`` (and its process group) by PID: ``sig`` first, SIGKILL after the grace time.

    Returns True when it exited on ``sig`` alone, False when SIGKILL was needed.
    """
    if proc.poll() is not None:
        return True
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return True
    try:
        proc.wait(timeout=grace_seconds)
        return True
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        return False


# --------------------------------------------------------------------------------------------
# DCMTK wrappers
# --------------------------------------------------------------------------------------------


@dataclass
class ToolResult:
    """Exit code and combined output of a command-line tool."""

    returncode: int
    output: str
    args: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __str__(self) -> str:  # shows up in assertion messages
        return f"$ {' '.join(self.args)}\n(exit {self.returncode})\n{self.output}"


def _run_tool(args: list[str], timeout_seconds: float) -> ToolResult:
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_seconds, env=env)
    return ToolResult(proc.returncode, proc.stdout + proc.stderr, args)


def echoscu(port: int, *, aet: str = TEST_SCU_AET, called: str = "DXRNODE", host: str = HOST,
            timeout_seconds: float = 10.0) -> ToolResult:
    """DCMTK ``echoscu``: C-ECHO ``called`` at ``host:port`` as ``aet``."""
    args = ["echoscu", "-v", "-aet", aet, "-aec", called, "-to", "5", "-ta", "5", "-td", "5",
            host, str(port)]
    return _run_tool(args, timeout_seconds)


def storescu(files: Iterable[os.PathLike | str], port: int, *, aet: str = TEST_SCU_AET,
             called: str = "DXRNODE", host: str = HOST, extra: Sequence[str] = (),
             timeout_seconds: float = 60.0) -> ToolResult:
    """DCMTK ``storescu``: C-STORE ``files`` over one association.

    The output is verbose, so a failure status shows up as ``Received Store Response (...)``.
    ``+sd``/directories are not used; pass files. ``extra`` adds options (e.g. ``-xs``).
    """
    args = ["storescu", "-v", "-aet", aet, "-aec", called, "-to", "10", "-ta", "10", "-td", "30",
            *extra, host, str(port), *[os.fspath(f) for f in files]]
    return _run_tool(args, timeout_seconds)


def store_statuses(result: ToolResult) -> list[str]:
    """The DIMSE statuses storescu printed, e.g. ``["Success", "Success"]``."""
    return re.findall(r"Received Store Response \((.*?)\)", result.output)


# --------------------------------------------------------------------------------------------
# Orthanc
# --------------------------------------------------------------------------------------------

# Loop guard: the node's own results (SR/SC, or anything the node AE sends) never go back to it.
_ROUTING_LUA = """\
-- Generated by tests/integration/servers.py: route CR/DX to the DXR node.
local NODE_MODALITY = '{modality}'
local NODE_AET = '{node_aet}'
local FORWARD_SOP_CLASSES = {{ {sop_classes} }}

function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin ~= nil and origin['RemoteAet'] == NODE_AET then
    return  -- results from the node: never send them back (no loops)
  end
  local modality = tags['Modality']
  if (modality == 'CR' or modality == 'DX') and FORWARD_SOP_CLASSES[tags['SOPClassUID']] then
    print('dxr-test-route ' .. instanceId .. ' ' .. modality .. ' -> ' .. NODE_MODALITY)
    SendToModality(instanceId, NODE_MODALITY)
  end
end
"""


@dataclass
class OrthancInstance:
    """One instance as Orthanc's REST API describes it."""

    id: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    series_instance_uid: str
    remote_aet: str | None
    reception_date: str | None


class _ServerProcess:
    """What the throw-away servers share: the process in ``proc``, its log at ``log_path``,
    ``with server:`` starting and stopping it."""

    proc: subprocess.Popen | None
    log_path: Path

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> Any:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class OrthancServer(_ServerProcess):
    """A throw-away Orthanc on free loopback ports, optionally routing CR/DX to the node.

    Parameters
    ----------
    workdir
        Directory for configuration, storage, index and log (created).
    aet
        Orthanc's DICOM AE title.
    node_aet
        AE title of the DXR node. When given, a Lua ``OnStoredInstance`` script forwards CR/DX
        instances to the modality ``"dxrnode"`` (set its address with :meth:`route_to_node`),
        except instances that came from ``node_aet``.
    dicomweb
        Load the DICOMweb plugin (QIDO/WADO/STOW under :attr:`dicomweb_url`).
    dicom_port, http_port
        Fixed ports (e.g. a port reserved earlier for a destination that comes up late);
        free ports when None.
    modalities
        Extra DICOM modalities, ``{name: (aet, host, port)}``.
    """

    NODE_MODALITY = "dxrnode"

    def __init__(self, workdir: os.PathLike | str, *, aet: str = "ORTHANC", node_aet: str | None = "DXRNODE",
                 dicomweb: bool = False, dicom_port: int | None = None, http_port: int | None = None,
                 modalities: dict[str, tuple[str, str, int]] | None = None,
                 association_close_delay_seconds: int = 1) -> None:
        self.workdir = Path(workdir)
        self.aet = aet
        self.node_aet = node_aet
        self.dicomweb = dicomweb
        self._auto_ports = dicom_port is None and http_port is None
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        self.modalities = dict(modalities or {})
        self.association_close_delay_seconds = association_close_delay_seconds
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "orthanc.log"
        self.config_path = self.workdir / "orthanc.json"

    # ---- lifecycle ----

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb root (QIDO-RS, WADO-RS, STOW-RS); only with ``dicomweb=True``."""
        if not self.dicomweb:
            raise RuntimeError("this Orthanc was started without the DICOMweb plugin (dicomweb=True)")
        return f"{self.url}/dicom-web"

    def write_config(self) -> dict[str, Any]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "storage").mkdir(exist_ok=True)
        config: dict[str, Any] = {
            "Name": f"dxr-test-{self.aet}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomScuTimeout": 10,
            "DicomAssociationCloseDelay": self.association_close_delay_seconds,
            "DicomModalities": {name: list(m) for name, m in self.modalities.items()},
            "OverwriteInstances": False,
            "SaveJobs": False,
            "ConcurrentJobs": 2,
            "StableAge": 3600,  # the tests never rely on Orthanc's own stability events
            "ExecuteLuaEnabled": False,
            "LuaScripts": [],
            "Plugins": [],
        }
        if self.node_aet is not None:
            lua_path = self.workdir / "route-to-node.lua"
            lua_path.write_text(_ROUTING_LUA.format(
                modality=self.NODE_MODALITY, node_aet=self.node_aet,
                sop_classes=", ".join(f"['{uid}'] = true" for uid in CR_DX_SOP_CLASSES)))
            config["LuaScripts"] = [str(lua_path)]
            # Until route_to_node() gives the real address, point at a closed port.
            config["DicomModalities"].setdefault(self.NODE_MODALITY, [self.node_aet, HOST, 9])
        if self.dicomweb:
            config["Plugins"] = [str(DICOMWEB_PLUGIN)]
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True,
                                  "WadoRoot": "/wado", "Host": f"{HOST}:{self.http_port}", "Ssl": False}
        self.config_path.write_text(json.dumps(config, indent=2))
        return config

    def start(self, timeout_seconds: float = 30.0) -> OrthancServer:
        """Start and wait for the REST API; with free ports chosen here, retry on a port race."""
        for attempt in range(3 if self._auto_ports else 1):
            try:
                return self._start_once(timeout_seconds)
            except RuntimeError:
                if attempt == 2 or not self._auto_ports or "annot" not in self.log_text():
                    raise
                self.dicom_port, self.http_port = free_port(), free_port()  # someone took ours
        raise AssertionError("unreachable")

    def _start_once(self, timeout_seconds: float) -> OrthancServer:
        binary = orthanc_binary()
        if binary is None:
            raise RuntimeError("Orthanc is not installed (Debian package orthanc)")
        if self.dicomweb and not DICOMWEB_PLUGIN.exists():
            raise RuntimeError(f"DICOMweb plugin missing at {DICOMWEB_PLUGIN} (Debian package orthanc-dicomweb)")
        self.write_config()
        env = dict(os.environ, TCP_NODELAY="1")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([binary, "--verbose", str(self.config_path)], stdout=log,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                                     start_new_session=True)
        log.close()
        try:
            wait_until(self._ready, timeout_seconds, what=f"Orthanc on {self.url}")
        except Exception:
            self.stop()
            raise RuntimeError(f"Orthanc did not start; log tail:\n{_tail(self.log_path)}") from None
        return self

    def _ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {self.proc.returncode if self.proc else None}:\n"
                               f"{_tail(self.log_path)}")
        try:
            self.get("/system")
            return True
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc, grace_seconds=15)
            self.proc = None

    # ---- REST ----

    def request(self, method: str, path: str, body: bytes | str | dict | list | None = None,
                *, content_type: str = "application/json", timeout_seconds: float = 30.0) -> bytes:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=timeout_seconds) as resp:
            return resp.read()

    def get(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        data = self.request("POST", path, body, **kw)
        return json.loads(data) if data.strip() else None

    def put(self, path: str, body: Any = None) -> Any:
        data = self.request("PUT", path, body)
        return json.loads(data) if data.strip() else None

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    # ---- DICOM peers ----

    def set_modality(self, name: str, aet: str, port: int, host: str = HOST) -> None:
        """Add or change a DICOM modality at run time (REST ``PUT /modalities/{name}``)."""
        self.put(f"/modalities/{name}", {"AET": aet, "Host": host, "Port": port})
        self.modalities[name] = (aet, host, port)

    def route_to_node(self, node: NodeProcess | tuple[str, int]) -> None:
        """Point the Lua routing at the node (a NodeProcess, or ``(aet, port)``)."""
        aet, port = (node.ae_title, node.port) if isinstance(node, NodeProcess) else node
        if self.node_aet is None:
            raise RuntimeError("this Orthanc has no routing script (node_aet=None)")
        if aet != self.node_aet:
            raise ValueError(f"routing script excludes results from {self.node_aet!r}, node is {aet!r}")
        self.set_modality(self.NODE_MODALITY, aet, port)

    def as_destination(self, name: str = "pacs") -> dict[str, Any]:
        """This Orthanc as a node ``[[destinations]]`` table."""
        return {"name": name, "ae_title": self.aet, "host": HOST, "port": self.dicom_port}

    def echo(self, modality: str) -> bool:
        """C-ECHO a configured modality from Orthanc."""
        try:
            self.post(f"/modalities/{modality}/echo", {"Timeout": 5})
            return True
        except urllib.error.HTTPError:
            return False

    # ---- content ----

    def study_id(self, study_uid: str) -> str | None:
        """Orthanc's ID of the study with this StudyInstanceUID, or None."""
        hits = self.post("/tools/lookup", study_uid, content_type="text/plain")
        return next((h["ID"] for h in hits if h["Type"] == "Study"), None)

    def instances(self, study_uid: str) -> list[OrthancInstance]:
        """All instances of a study with their SOP Class UID, Modality and sender AE."""
        sid = self.study_id(study_uid)
        if sid is None:
            return []
        out = []
        for series in self.get(f"/studies/{sid}/series"):
            modality = series["MainDicomTags"].get("Modality", "")
            for inst_id in series["Instances"]:
                meta = self.get(f"/instances/{inst_id}/metadata?expand")
                tags = self.get(f"/instances/{inst_id}")["MainDicomTags"]
                out.append(OrthancInstance(
                    id=inst_id,
                    sop_instance_uid=tags.get("SOPInstanceUID", ""),
                    sop_class_uid=meta.get("SopClassUid", ""),
                    modality=modality,
                    series_instance_uid=series["MainDicomTags"].get("SeriesInstanceUID", ""),
                    remote_aet=meta.get("RemoteAET"),
                    reception_date=meta.get("ReceptionDate")))
        return out

    def instance_ids(self) -> list[str]:
        return self.get("/instances")

    def sr_instances(self, study_uid: str) -> list[OrthancInstance]:
        return [i for i in self.instances(study_uid) if i.sop_class_uid in SR_SOP_CLASSES]

    def wait_for_instances(self, study_uid: str, predicate: Callable[[OrthancInstance], bool] = lambda i: True,
                           *, count: int = 1, timeout_seconds: float = 60.0,
                           interval_seconds: float = 0.1) -> list[OrthancInstance]:
        """Poll until at least ``count`` instances of the study satisfy ``predicate``; return them."""
        def found() -> list[OrthancInstance] | None:
            hits = [i for i in self.instances(study_uid) if predicate(i)]
            return hits if len(hits) >= count else None
        return wait_until(found, timeout_seconds, interval_seconds=interval_seconds,
                          what=f"{count} matching instance(s) of study {study_uid} in Orthanc {self.aet}")

    def upload(self, path: os.PathLike | str) -> dict[str, Any]:
        """Store one DICOM file over REST (``POST /instances``), in its own transfer syntax.

        Lua routing applies as for C-STORE. Use it for compressed files, which DCMTK storescu
        only sends with per-syntax options.
        """
        return self.post("/instances", Path(path).read_bytes(), content_type="application/dicom")

    def wait_for_srs(self, study_uid: str, *, count: int = 1,
                     timeout_seconds: float = RESULT_TIMEOUT_SECONDS,
                     interval_seconds: float = 0.1) -> list[OrthancInstance]:
        """Wait until the study holds at least ``count`` SR instances (Modality SR); return them all."""
        return self.wait_for_instances(study_uid, lambda i: i.modality == "SR", count=count,
                                       timeout_seconds=timeout_seconds, interval_seconds=interval_seconds)

    def instance_file(self, instance_id: str) -> bytes:
        """The stored DICOM file (Part 10 bytes)."""
        return self.request("GET", f"/instances/{instance_id}/file")

    def instance_dataset(self, instance_id: str):
        import io

        import pydicom
        return pydicom.dcmread(io.BytesIO(self.instance_file(instance_id)))

    def jobs(self) -> list[dict[str, Any]]:
        """Orthanc's jobs (routing jobs show failures to reach the node here)."""
        return self.get("/jobs?expand")


# --------------------------------------------------------------------------------------------
# The DXR node
# --------------------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: dict[str, Any]) -> str:
    """Write a config of tables and arrays of tables (the node's shape) as TOML text."""
    lines: list[str] = []
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None]
            lines.append("")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for table in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
                lines.append("")
        elif isinstance(value, list):
            continue  # an empty array of tables: nothing to write
        else:
            raise TypeError(f"top-level {key!r} must be a table or an array of tables")
    return "\n".join(lines)


class NodeProcess(_ServerProcess):
    """``dxr-node serve`` as a subprocess with its own config and data directory.

    Parameters
    ----------
    workdir
        Holds ``node.toml``, the data dir (``var/``) and ``node.log`` (stdout+stderr, appended
        across restarts).
    ae_title
        The node's AE title.
    sources
        Allowed callers ``[(aet, host_or_None), ...]``; :data:`TEST_SCU_AET` is always added
        so the harness can echo and store directly.
    destinations
        ``[[destinations]]`` tables, e.g. ``[orthanc.as_destination()]``.
    quiet_period_seconds, workers, export
        ``[study]``, ``[node].workers`` and ``[export]`` settings (short for tests).
    extra
        More top-level tables merged over the generated config (e.g. ``{"filter": {...}}``).
    """

    def __init__(self, workdir: os.PathLike | str, *, ae_title: str = "DXRNODE",
                 sources: Sequence[tuple[str, str | None]] = (("ORTHANC", HOST),),
                 destinations: Sequence[dict[str, Any]] = (), quiet_period_seconds: float = 1.0,
                 workers: int = 1, export: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.ae_title = ae_title
        self._auto_port = port is None
        self.port = port or free_port()
        self.config_path = self.workdir / "node.toml"
        self.data_dir = self.workdir / "var"
        self.log_path = self.workdir / "node.log"
        all_sources = list(sources)
        if not any(aet == TEST_SCU_AET for aet, _ in all_sources):
            all_sources.append((TEST_SCU_AET, HOST))
        self.config: dict[str, Any] = {
            "node": {"ae_title": ae_title, "bind": HOST, "port": self.port, "data_dir": "var",
                     "workers": workers},
            "study": {"quiet_period_seconds": quiet_period_seconds},
            "sources": [{"ae_title": aet, "host": host} for aet, host in all_sources],
            "destinations": [dict(d) for d in destinations],
            "export": {"retry_base_delay_seconds": 0.5, "retry_max_delay_seconds": 2.0,
                       "max_attempts": 4, **(export or {})},
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(self.config.get(key), dict):
                self.config[key].update(value)
            else:
                self.config[key] = value
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.stop_needed_sigkill = False

    # ---- lifecycle ----

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(to_toml(self.config))
        return self.config_path

    def start(self, *, wait: bool = True, timeout_seconds: float = 60.0) -> NodeProcess:
        if self.running:
            raise RuntimeError("node already running")
        self.write_config()
        env = dict(os.environ, TCP_NODELAY="1", PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            log.write(f"=== harness: start #{self.starts + 1} on port {self.port} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(node_binary()), "serve", "--config", str(self.config_path), "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir, start_new_session=True)
        self.starts += 1
        if wait:
            try:
                self.wait_ready(timeout_seconds)
            except RuntimeError:
                # A port race on the first start (another process bound our free port): new port.
                if self.starts == 1 and self._auto_port and "cannot listen" in self.log_text():
                    self.proc = None
                    self.port = free_port()
                    self.config["node"]["port"] = self.port
                    return self.start(wait=wait, timeout_seconds=timeout_seconds)
                raise
        return self

    def wait_ready(self, timeout_seconds: float = 60.0) -> None:
        """Wait until the node answers C-ECHO (as :data:`TEST_SCU_AET`)."""
        def ready() -> bool:
            if not self.running:
                raise RuntimeError(f"dxr-node exited with {self.proc.returncode if self.proc else None}; "
                                   f"log tail:\n{_tail(self.log_path)}")
            return self.echo().ok
        try:
            wait_until(ready, timeout_seconds, interval_seconds=0.2, what=f"dxr-node C-ECHO on port {self.port}")
        except TimeoutError:
            raise TimeoutError(f"dxr-node did not answer C-ECHO within {timeout_seconds} s; log tail:\n"
                               f"{_tail(self.log_path)}") from None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the node's whole process group (main process and workers) and reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            if sig == signal.SIGKILL:
                self._reap_group()
            self.proc = None

    def _reap_group(self) -> None:
        # Workers are in the node's session; make sure none survives a SIGKILL of the leader.
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self, grace_seconds: float = 20.0) -> int | None:
        """SIGTERM to the process group (as systemd does), SIGKILL after ``grace_seconds``.

        Returns the exit code (negative: killed by that signal); :attr:`stop_needed_sigkill`
        tells whether SIGTERM alone was not enough.
        """
        if self.proc is None:
            return None
        proc = self.proc
        self.stop_needed_sigkill = not _terminate(proc, grace_seconds=grace_seconds)
        self._reap_group()
        self.proc = None
        return proc.returncode

    def restart(self, *, wait: bool = True) -> NodeProcess:
        self.stop()
        return self.start(wait=wait)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def child_pids(self) -> list[int]:
        """PIDs of the node's direct children (its worker processes)."""
        if self.proc is None:
            return []
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
        return sorted(set(pids))

    # ---- talking to it ----

    def echo(self, aet: str = TEST_SCU_AET, called: str | None = None) -> ToolResult:
        return echoscu(self.port, aet=aet, called=called or self.ae_title)

    def store(self, files: Iterable[os.PathLike | str], *, aet: str = TEST_SCU_AET,
              called: str | None = None, extra: Sequence[str] = ()) -> ToolResult:
        return storescu(files, self.port, aet=aet, called=called or self.ae_title, extra=extra)

    def cli(self, *args: str, timeout_seconds: float = 60.0, with_config: bool = True) -> ToolResult:
        """Run ``dxr-node ARGS --config node.toml`` (e.g. ``cli("queue", "list")``).

        ``with_config=False`` leaves ``--config`` out (``cli("check-config", path, with_config=False)``).
        """
        cmd = [str(node_binary()), *args, *(["--config", str(self.config_path)] if with_config else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_seconds, cwd=self.workdir)
        return ToolResult(proc.returncode, proc.stdout + proc.stderr, cmd)

    # ---- database (read-only; see node/store.py for the schema) ----

    @property
    def db_path(self) -> Path:
        return self.data_dir / "node.sqlite3"

    def db_rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Rows of a read-only query on the node's SQLite database (safe while it runs: WAL)."""
        import sqlite3

        if not self.db_path.exists():
            return []
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(sql, params)]
        finally:
            con.close()

    def jobs(self, study_uid: str) -> list[dict[str, Any]]:
        return self.db_rows("SELECT * FROM jobs WHERE study_instance_uid = ? ORDER BY id", study_uid)

    def stored_instances(self, study_uid: str) -> list[dict[str, Any]]:
        return self.db_rows("SELECT * FROM instances WHERE study_instance_uid = ?", study_uid)

    def exports(self, study_uid: str) -> list[dict[str, Any]]:
        return self.db_rows(
            "SELECT e.*, o.kind, o.sop_class_uid FROM exports e JOIN outputs o "
            "ON o.sop_instance_uid = e.output_sop_instance_uid WHERE o.study_instance_uid = ? ORDER BY e.id",
            study_uid)

    # ---- log ----

    def log_tail(self, n_lines: int = 60) -> str:
        return _tail(self.log_path, n_lines)

    def log_lines(self, pattern: str) -> list[str]:
        """Log lines matching the regular expression ``pattern``."""
        rx = re.compile(pattern)
        return [line for line in self.log_text().splitlines() if rx.search(line)]

    def wait_for_log(self, pattern: str, timeout_seconds: float = 30.0, *, count: int = 1) -> list[str]:
        """Wait until at least ``count`` log lines match ``pattern``; return them."""
        def found() -> list[str] | None:
            lines = self.log_lines(pattern)
            return lines if len(lines) >= count else None
        try:
            return wait_until(found, timeout_seconds, what=f"node log line /{pattern}/")
        except TimeoutError:
            raise TimeoutError(f"no node log line /{pattern}/ within {timeout_seconds} s; log tail:\n"
                               f"{self.log_tail()}") from None
