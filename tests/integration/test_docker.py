"""The Docker image: builds, runs as non-root, answers C-ECHO, analyses a stored phantom study.

Skipped, with the reason, when no Docker daemon answers (``docker info``). On this kind of
machine ``bash ../shared/tools/docker-local-base.sh`` (as root) starts one and provides the
``python:3.11-slim`` base image without a registry.

The container gets a test config on ``/config`` (read-only) and a host folder on ``/data``;
the result lands in the folder destination under ``/data/outbox``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from tests import dicom_samples
from tests.integration.servers import (
    HOST,
    SR_SOP_CLASSES,
    echoscu,
    free_port,
    store_statuses,
    storescu,
    to_toml,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
IMAGE = "dxr-node:test"
BASE_IMAGE = "python:3.11-slim"  # the Dockerfile's default ARG BASE_IMAGE
BUILD_TIMEOUT_SECONDS = 1800


def _docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _docker_unavailable() -> str | None:
    if shutil.which("docker") is None:
        return "docker CLI not installed"
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker daemon (`docker info`: {first}); run ../shared/tools/docker-local-base.sh as root"
    return None


def _base_image_unavailable(base: str = BASE_IMAGE) -> str | None:
    if _docker("image", "inspect", base, check=False).returncode == 0:
        return None
    try:
        if _docker("pull", base, timeout=300, check=False).returncode == 0:
            return None
    except subprocess.TimeoutExpired:
        pass
    return (f"base image {base} is neither local nor pullable (no registry?); "
            "run ../shared/tools/docker-local-base.sh as root")


@pytest.fixture(scope="module")
def image() -> str:
    why = _docker_unavailable() or _base_image_unavailable()
    if why:
        pytest.skip(why)
    proc = _docker("build", "-t", IMAGE, str(REPO), timeout=BUILD_TIMEOUT_SECONDS, check=False)
    assert proc.returncode == 0, f"docker build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return IMAGE


def _container_config(token: str) -> dict:
    return {
        "node": {"ae_title": "DXRNODE", "bind": "0.0.0.0", "port": 11112, "data_dir": "/data", "workers": 1},
        "study": {"quiet_period_seconds": 1.0},
        "sources": [{"ae_title": "TESTSCU"}],
        "destinations": [{"name": "outbox", "type": "folder", "path": "outbox"}],
        "reference": {"dir": "/opt/dxr-node/reference", "table": "black2001"},
        "http": {"bind": "0.0.0.0", "port": 8080, "token": token},
    }


def test_image_runs_as_non_root_echoes_and_analyses_a_stored_study(image: str, tmp_path: Path,
                                                                    write_phantom_study) -> None:
    data = tmp_path / "data"
    config = tmp_path / "config"
    data.mkdir()
    config.mkdir()
    data.chmod(0o777)  # the container user (uid 10001) writes here
    token = secrets.token_urlsafe(16)
    (config / "node.toml").write_text(to_toml(_container_config(token)))
    dimse_port, http_port = free_port(), free_port()
    name = f"dxr-node-test-{secrets.token_hex(4)}"

    _docker("run", "-d", "--init", "--name", name,
            "-p", f"{HOST}:{dimse_port}:11112", "-p", f"{HOST}:{http_port}:8080",
            "-v", f"{data}:/data", "-v", f"{config}:/config:ro",
            "-e", "NUMBA_DEBUG_CACHE=1",  # the log shows whether kernels came from the image's cache
            "--health-interval", "2s", "--health-start-period", "5s", image)
    try:
        def logs() -> str:
            p = _docker("logs", name, check=False)
            return p.stdout + p.stderr

        try:
            wait_until(lambda: echoscu(dimse_port, called="DXRNODE").ok, 60, interval_seconds=0.5,
                       what="C-ECHO to the container")
        except TimeoutError:
            raise AssertionError(f"no C-ECHO answer; container log:\n{logs()[-4000:]}") from None

        inspect = json.loads(_docker("inspect", name).stdout)[0]
        assert inspect["Config"]["User"] == "dxr"
        assert _docker("exec", name, "id", "-u").stdout.strip() == "10001"

        study_uid, files = write_phantom_study(1)
        result = storescu(files, dimse_port, called="DXRNODE")
        assert store_statuses(result) == ["Success"], result

        outbox = data / "outbox"

        def srs() -> list[pydicom.Dataset]:
            found = [pydicom.dcmread(p) for p in outbox.rglob("*.dcm")] if outbox.exists() else []
            return [d for d in found if d.SOPClassUID in SR_SOP_CLASSES and d.StudyInstanceUID == study_uid]

        try:
            [sr] = wait_until(srs, 120, interval_seconds=0.5, what="the SR in /data/outbox")
        except TimeoutError:
            raise AssertionError(f"no SR in the outbox; container log:\n{logs()[-4000:]}") from None
        source_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID
        evidence = {ref.ReferencedSOPInstanceUID for item in sr.CurrentRequestedProcedureEvidenceSequence
                    for series in item.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
        assert source_uid in evidence

        # HTTP side: health, Docker's HEALTHCHECK, and one STOW-RS instance with the token.
        with urllib.request.urlopen(f"http://{HOST}:{http_port}/healthz", timeout=10) as resp:
            assert json.loads(resp.read())["status"] == "ok"
        wait_until(lambda: json.loads(_docker("inspect", name).stdout)[0]["State"]["Health"]["Status"] == "healthy",
                   60, interval_seconds=1, what="Docker health status 'healthy'")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        client = DICOMwebClient(url=f"http://{HOST}:{http_port}/dicomweb", session=session)
        ds = dicom_samples.make_image_dataset(rows=64, columns=64)
        assert len(client.store_instances([ds]).ReferencedSOPSequence) == 1

        # The warmed numba cache serves the kernels: a measurement in the container loads every
        # kernel from the image's cache and compiles (saves) nothing, in the job and here.
        text = logs()
        assert "event=job_done" in text
        assert "[cache] data saved" not in text, text[-4000:]
        shutil.copy(REPO / "tests" / "phantom.py", config / "phantom.py")
        probe = _docker("exec", "-e", "NUMBA_DEBUG_CACHE=1", "-w", "/config", name, "python", "-c",
                        "import analysis; from phantom import make_hand, truth_location; "
                        "image, truth = make_hand(seed=3); "
                        "r = analysis.analyse_located(image, truth_location(truth), pixel_spacing_mm=truth.spacing_mm); "
                        "print('measured:', r.status)", timeout=300)
        out = probe.stdout + probe.stderr
        assert "measured: ok" in out, out[-4000:]  # the cached kernels really measured the phantom
        assert "[cache] data loaded" in out and "[cache] data saved" not in out, out[-4000:]
    finally:
        _docker("rm", "-f", name, check=False)
        # Files the container wrote belong to uid 10001; make them removable by the test user.
        if os.getuid() != 0:
            subprocess.run(["docker", "run", "--rm", "-v", f"{data}:/data", "--entrypoint", "chmod", image,
                            "-R", "a+rwX", "/data"], capture_output=True, timeout=60)
