"""DICOMweb end to end: STOW-RS into ``dxr-node serve`` (uvicorn), results out to a real Orthanc.

* a phantom study posted with dicomweb-client is analysed and all its outputs (SR, and SC when
  measured) reach Orthanc over DIMSE, and, in the other test, over STOW-RS into Orthanc's
  DICOMweb plugin;
* /metrics counters move as instances arrive by either protocol;
* bad requests against the real server (streamed, chunked) get their status and store nothing;
* the disk watermark: crossing it makes /readyz unready, C-STORE answer A700 and STOW-RS 507;
  freeing the space makes the node accept again.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from prometheus_client.parser import text_string_to_metric_families

from tests import dicom_samples
from tests.integration.servers import (
    DICOMWEB_PLUGIN,
    HOST,
    SR_SOP_CLASSES,
    NodeProcess,
    OrthancServer,
    free_port,
    store_statuses,
    wait_until,
)

# ------------------------------------------------------------------------------ helpers
class WebNode:
    """A NodeProcess with ``[http]`` on a free port and a random bearer token."""

    def __init__(self, node_factory: Callable[..., NodeProcess], *, http: dict | None = None,
                 disk: dict | None = None, **kwargs) -> None:
        self.token = secrets.token_urlsafe(16)
        self.http_port = free_port()
        extra = {"http": {"bind": HOST, "port": self.http_port, "token": self.token, **(http or {})}}
        if disk:
            extra["disk"] = disk
        self.node = node_factory(extra=extra, **kwargs)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def start(self) -> WebNode:
        self.node.start()
        wait_until(lambda: self.get("/healthz")[0] == 200, 20, what="node /healthz")
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return 0, ""

    def client(self, token: str | None = None) -> DICOMwebClient:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token or self.token}"
        client = DICOMwebClient(url=f"{self.url}/dicomweb", session=session)
        client.set_http_retry_params(retry=False)
        return client

    def metrics(self) -> dict[tuple[str, tuple], float]:
        status, text = self.get("/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def readyz(self) -> tuple[int, dict]:
        status, text = self.get("/readyz")
        return status, json.loads(text)

    def output_uids(self, study_uid: str) -> set[str]:
        with sqlite3.connect(self.node.data_dir / "node.sqlite3") as c:
            return {r[0] for r in c.execute("SELECT sop_instance_uid FROM outputs WHERE study_instance_uid=?",
                                            (study_uid,))}

    def stored_uids(self) -> set[str]:
        with sqlite3.connect(self.node.data_dir / "node.sqlite3") as c:
            return {r[0] for r in c.execute("SELECT sop_instance_uid FROM instances")}


def _metric(m: dict, name: str, **labels) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def orthanc_web(tmp_path_factory: pytest.TempPathFactory):
    """An Orthanc with the DICOMweb plugin (no routing: the tests post straight to the node)."""
    if not DICOMWEB_PLUGIN.exists():
        pytest.skip(f"Orthanc DICOMweb plugin missing at {DICOMWEB_PLUGIN} (Debian package orthanc-dicomweb)")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc-web"), aet="ORTHANCWEB", node_aet=None, dicomweb=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _wait_results(pacs: OrthancServer, web: WebNode, study_uid: str) -> list:
    """Every output the node made for the study (SR, and SC when measured), once all are in Orthanc."""
    pacs.wait_for_instances(study_uid, lambda i: i.sop_class_uid in SR_SOP_CLASSES, timeout_seconds=120,
                            interval_seconds=0.5)

    def all_there():
        outputs = web.output_uids(study_uid)
        found = [i for i in pacs.instances(study_uid) if i.sop_instance_uid in outputs]
        return found if outputs and len(found) == len(outputs) else None
    return wait_until(all_there, 60, interval_seconds=0.5, what=f"all node outputs of {study_uid} in Orthanc")


# ------------------------------------------------------------------------------ end to end
def test_stow_rs_study_is_analysed_and_sr_reaches_orthanc_over_dimse(
        orthanc: OrthancServer, node_factory, write_phantom_study) -> None:
    web = WebNode(node_factory, destinations=[orthanc.as_destination("pacs")]).start()
    study_uid, files = write_phantom_study(1)
    before = web.metrics()

    response = web.client().store_instances([pydicom.dcmread(f) for f in files])
    sop_uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert {r.ReferencedSOPInstanceUID for r in response.ReferencedSOPSequence} == sop_uids
    assert "FailedSOPSequence" not in response
    assert web.stored_uids() == sop_uids  # on disk and in SQLite when the response came

    results = _wait_results(orthanc, web, study_uid)
    srs = [i for i in results if i.sop_class_uid in SR_SOP_CLASSES]
    assert srs and all(i.remote_aet == web.node.ae_title for i in srs)
    sr = orthanc.instance_dataset(srs[0].id)
    assert sr.StudyInstanceUID == study_uid
    assert sop_uids <= {ref.ReferencedSOPInstanceUID for item in sr.CurrentRequestedProcedureEvidenceSequence
                        for series in item.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    assert web.node.log_lines(r"event=export_sent .*destination=pacs")

    # /metrics moved with the instance, the job and the exports.
    # A fresh node: every counter below counts this one study only, so it is exact (a second run or
    # a re-sent output would show). Wait until the export rows have caught up with Orthanc.
    after = wait_until(lambda: (m := web.metrics()) and _metric(m, "dxr_jobs", state="done") >= 1
                       and _metric(m, "dxr_export_attempts_total", destination="pacs") >= len(results) and m, 20,
                       what="job and exports counted in /metrics")
    received = (_metric(after, "dxr_instances_received_total", protocol="stow-rs", source=HOST)
                - _metric(before, "dxr_instances_received_total", protocol="stow-rs", source=HOST))
    assert received == len(files)
    assert _metric(after, "dxr_stow_requests_total", status="200") - _metric(before, "dxr_stow_requests_total", status="200") == 1
    assert _metric(after, "dxr_studies_completed_total") == 1
    assert _metric(after, "dxr_jobs", state="done") == 1
    assert _metric(after, "dxr_analysis_duration_seconds_count") == 1
    assert _metric(after, "dxr_analysis_duration_seconds_sum") > 0
    assert _metric(after, "dxr_export_attempts_total", destination="pacs") == len(results)
    assert _metric(after, "dxr_export_failures_total", destination="pacs") == 0

    # And by DIMSE: the other protocol's counter moves.
    _, more = dicom_samples.write_study(web.node.workdir / "dimse-study", 2)
    assert store_statuses(web.node.store(more)) == ["Success", "Success"]
    m = web.metrics()
    assert (_metric(m, "dxr_instances_received_total", protocol="dimse", source="TESTSCU")
            - _metric(before, "dxr_instances_received_total", protocol="dimse", source="TESTSCU")) == 2
    assert _metric(m, "dxr_instances_stored") == len(files) + 2


def test_results_go_to_orthanc_dicomweb_plugin_over_stow_rs(
        orthanc_web: OrthancServer, node_factory, write_phantom_study) -> None:
    dest = {"name": "web", "type": "dicomweb", "url": orthanc_web.dicomweb_url}
    web = WebNode(node_factory, destinations=[dest]).start()
    study_uid, files = write_phantom_study(1)
    response = web.client().store_instances([pydicom.dcmread(f) for f in files], study_instance_uid=study_uid)
    assert len(response.ReferencedSOPSequence) == len(files)

    results = _wait_results(orthanc_web, web, study_uid)
    # Stored by the DICOMweb plugin's STOW-RS (Orthanc's origin "Plugins"), not by a DICOM association.
    origins = {orthanc_web.get(f"/instances/{i.id}/metadata?expand").get("Origin") for i in results}
    assert origins == {"Plugins"}, origins
    assert any(i.sop_class_uid in SR_SOP_CLASSES for i in results)
    sent = web.node.log_lines(r"event=export_sent .*destination=web")
    assert len(sent) == len(results)
    status, ready = web.readyz()
    assert status == 200 and ready["checks"]["destinations"]["web"]["last_export"]["state"] == "sent"


def test_bad_requests_on_the_real_server_store_nothing(node_factory) -> None:
    web = WebNode(node_factory, http={"max_body_bytes": 300_000}).start()
    ds = dicom_samples.make_image_dataset(rows=128, columns=128)
    good = [ds]

    with pytest.raises(requests.HTTPError) as err:  # no token
        DICOMwebClient(url=f"{web.url}/dicomweb").store_instances(good)
    assert err.value.response.status_code == 401 and "Traceback" not in err.value.response.text

    with pytest.raises(requests.HTTPError) as err:  # wrong token
        web.client(token="wrong").store_instances(good)
    assert err.value.response.status_code == 401

    r = requests.post(f"{web.url}/dicomweb/studies", data=b"\x00" * 100,
                      headers={"Authorization": f"Bearer {web.token}", "Content-Type": "application/dicom"})
    assert r.status_code == 415 and r.json()["error"]

    # Oversized with Content-Length (dicomweb-client sends one under 1 MB): refused before reading.
    big = [dicom_samples.make_image_dataset(rows=256, columns=256, seed=k) for k in range(3)]
    with pytest.raises(requests.HTTPError) as err:
        web.client().store_instances(big)
    assert err.value.response.status_code == 413 and "max_body_bytes" in err.value.response.json()["error"]

    # Oversized and chunked (no Content-Length): cut off while streaming.
    chunk = b"x" * 64 * 1024
    with pytest.raises(requests.RequestException) as err:
        r = requests.post(f"{web.url}/dicomweb/studies", data=iter([chunk] * 10), headers={
            "Authorization": f"Bearer {web.token}",
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
        r.raise_for_status()
    if isinstance(err.value, requests.HTTPError):  # the client may see the connection closed first
        assert err.value.response.status_code == 413
    assert len(web.node.log_lines(r"event=stow_refused .*reason=too_large")) == 2

    assert web.stored_uids() == set()
    assert [p for p in (web.node.data_dir / "tmp").iterdir()] == []
    # The node is still serving: a good request now succeeds.
    assert len(web.client().store_instances(good).ReferencedSOPSequence) == 1
    assert web.stored_uids() == {ds.SOPInstanceUID}


# ------------------------------------------------------------------------------ disk watermark
def test_disk_watermark_refuses_with_a700_and_507_then_accepts_again(node_factory, tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    margin = min(2 * 1024**3, free // 4)
    if margin < 64 * 1024**2:
        pytest.skip(f"only {free} bytes free on {tmp_path}: too little to simulate a full disk safely")
    # Watermark `margin` below the current free space; a ballast file of 2 * margin crosses it.
    web = WebNode(node_factory, disk={"min_free_bytes": free - margin}).start()
    status, ready = web.readyz()
    assert status == 200, ready

    ballast = web.node.data_dir / "ballast.bin"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, 2 * margin)  # reserves the blocks without writing them
        except OSError as exc:
            pytest.skip(f"cannot preallocate a ballast file here ({exc})")
    finally:
        os.close(fd)
    try:
        status, ready = web.readyz()
        assert status == 503
        assert any("min_free_bytes" in r for r in ready["reasons"]), ready
        assert ready["checks"]["disk"]["ok"] is False

        _, files = dicom_samples.write_study(tmp_path / "full", 1)
        result = web.node.store(files)
        [dimse_status] = store_statuses(result)
        assert "OutOfResources" in dimse_status.replace(" ", ""), result
        assert web.node.log_lines(r"event=instance_refused .*reason=no_space")

        with pytest.raises(requests.HTTPError) as err:
            web.client().store_instances([pydicom.dcmread(files[0])])
        assert err.value.response.status_code == 507
        assert web.stored_uids() == set()
        assert _metric(web.metrics(), "dxr_accepting_data") == 0
    finally:
        ballast.unlink()

    status, ready = web.readyz()
    assert status == 200, ready
    assert store_statuses(web.node.store(files)) == ["Success"]
    assert _metric(web.metrics(), "dxr_accepting_data") == 1
    assert web.stored_uids() == {pydicom.dcmread(files[0], stop_before_pixels=True).SOPInstanceUID}
