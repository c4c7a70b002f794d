"""``dxr-node request``: studies already in a real Orthanc are fetched by C-FIND + C-MOVE and analysed.

The Orthanc here has no routing script: nothing reaches the node unless the node asks. It knows
the node as the DICOM modality ``dxrnode`` (the move destination). The node lists the Orthanc
only under ``[[pacs]]`` (not ``[[sources]]``): a configured PACS may deliver what it was asked for.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

import pydicom

from node.config import load_config
from node.report.history import HistoryPoint, points_from_sr
from node.retrieve.priors import pacs_history

from tests import dicom_samples
from tests.integration.servers import HOST, NodeProcess, OrthancServer

SC_MODALITY = "OT"
SHOT_DIR = Path(__file__).resolve().parents[2] / "out" / "web"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """An Orthanc holding studies stored before any node started; no Lua routing."""
    server = OrthancServer(tmp_path_factory.mktemp("archive"), aet="ARCHIVE", node_aet=None, dicomweb=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pacs_table(orthanc: OrthancServer, name: str = "archive") -> dict:
    return {"name": name, "ae_title": orthanc.aet, "host": HOST, "port": orthanc.dicom_port}


def requesting_node(node_factory: Callable[..., NodeProcess], orthanc: OrthancServer, *,
                    register: bool = True, ae_title: str = "DXRNODE", **kwargs) -> NodeProcess:
    """A running node with the archive as [[pacs]] and [[destinations]]; known to Orthanc when ``register``."""
    node = node_factory(ae_title=ae_title, sources=[], destinations=[orthanc.as_destination("pacs")],
                        extra={"pacs": [pacs_table(orthanc)], **kwargs.pop("extra", {})}, **kwargs)
    node.start()
    if register:
        orthanc.set_modality("dxrnode", ae_title, node.port)  # one entry per AE title: Orthanc refuses ambiguous ones
    return node


def upload_study(orthanc: OrthancServer, files: list[Path]) -> None:
    for path in files:
        orthanc.upload(path)


def test_request_by_accession_analyses_a_study_stored_before_the_node_started(
        archive, node_factory, write_phantom_study):
    accession = "A" + uuid.uuid4().hex[:10].upper()
    study_uid, files = write_phantom_study(1, accession=accession, patient_id="REQ-" + accession)
    upload_study(archive, files)
    assert not archive.sr_instances(study_uid)
    node = requesting_node(node_factory, archive)

    result = node.cli("request", "--accession", accession, "--from", "archive")

    assert result.ok, result
    assert f"study {study_uid} (accession {accession}" in result.output
    assert "1 instance(s) retrieved" in result.output
    srs = archive.wait_for_srs(study_uid)
    assert all(i.remote_aet == "DXRNODE" for i in srs)
    pictures = archive.wait_for_instances(study_uid, lambda i: i.modality == SC_MODALITY)
    assert pictures
    assert len(node.stored_instances(study_uid)) == 1
    assert node.log_lines(r"event=association_accepted calling_ae=ARCHIVE")


def test_request_by_patient_fetches_each_hand_study_and_not_the_chest(
        archive, node_factory, write_phantom_study, tmp_path):
    patient = "PAT-" + uuid.uuid4().hex[:8].upper()
    first, first_files = write_phantom_study(1, patient_id=patient, accession="P1" + patient[-6:], study_date="20240105")
    second, second_files = write_phantom_study(1, patient_id=patient, accession="P2" + patient[-6:],
                                               study_date="20250310")
    chest_ds = dicom_samples.make_image_dataset(body_part="CHEST", patient_id=patient)
    chest, chest_files = str(chest_ds.StudyInstanceUID), [dicom_samples.save(chest_ds, tmp_path / "chest.dcm")]
    for files in (first_files, second_files, chest_files):
        upload_study(archive, files)
    node = requesting_node(node_factory, archive)

    result = node.cli("request", "--patient-id", patient, "--from", "archive", timeout_seconds=120)

    assert result.ok, result
    assert first in result.output and second in result.output and chest not in result.output
    assert "2 study(ies) from PACS archive" in result.output
    for study in (first, second):
        archive.wait_for_srs(study)
    assert node.stored_instances(chest) == []
    # --since leaves the earlier study out
    later = node.cli("request", "--patient-id", patient, "--since", "2025-01-01", "--from", "archive")
    assert later.ok, later
    assert second in later.output and first not in later.output


def test_a_pacs_that_does_not_know_the_node_refuses_the_move_destination(archive, node_factory, write_phantom_study):
    accession = "R" + uuid.uuid4().hex[:10].upper()
    study_uid, files = write_phantom_study(1, accession=accession)
    upload_study(archive, files)
    # The node queries as QRSCU (a modality Orthanc knows) but its own AE, the move destination, is unknown.
    node = requesting_node(node_factory, archive, register=False, ae_title="DXRSTRANGER",
                           export={"calling_ae_title": "QRSCU"})
    archive.set_modality("qrscu", "QRSCU", 9)

    result = node.cli("request", "--accession", accession, "--from", "archive")

    assert result.returncode == 1, result
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dxr-node: error: PACS archive"), result
    assert "DXRSTRANGER" in lines[0] and "move destination" in lines[0], result
    print(lines[0])
    assert node.stored_instances(study_uid) == []


def test_request_errors_are_one_line(archive, node_factory):
    node = requesting_node(node_factory, archive)
    missing = node.cli("request", "--accession", "NOSUCHACCESSION", "--from", "archive")
    assert missing.returncode == 1
    assert missing.output.strip() == "dxr-node: error: PACS archive has no study for accession NOSUCHACCESSION"
    unknown = node.cli("request", "--accession", "X", "--from", "nowhere")
    assert unknown.returncode == 2 and "no [[pacs]] named 'nowhere' (configured: archive)" in unknown.output
    both = node.cli("request", "--accession", "X", "--patient-id", "P")
    assert both.returncode == 2 and "exactly one of" in both.output
    too_long = node.cli("request", "--accession", "A" * 17)
    assert too_long.returncode == 2 and "--accession must be at most 16 characters" in too_long.output
    wildcard = node.cli("request", "--patient-id", "*")
    assert wildcard.returncode == 2 and "without wildcards" in wildcard.output
    node.stop()
    stopped = node.cli("request", "--accession", "X", "--from", "archive")
    assert stopped.returncode == 1 and "the node is not running" in stopped.output, stopped


def test_request_from_a_dicomweb_pacs_ingests_by_wado(archive, node_factory, write_phantom_study):
    accession = "W" + uuid.uuid4().hex[:10].upper()
    study_uid, files = write_phantom_study(1, accession=accession, patient_id="WEB-" + accession)
    upload_study(archive, files)
    node = node_factory(sources=[], destinations=[archive.as_destination("pacs")],
                        extra={"pacs": [{"name": "web", "type": "dicomweb", "url": archive.dicomweb_url}]})
    node.start()

    result = node.cli("request", "--accession", accession)

    assert result.ok, result
    assert "1 instance(s) retrieved" in result.output
    assert node.stored_instances(study_uid)[0]["source"] == "dicomweb"
    sr = archive.instance_dataset(archive.wait_for_srs(study_uid)[0].id)
    # Priors over DICOMweb: a later study of the patient finds this result by QIDO-RS + WADO-RS.
    later = pydicom.dcmread(files[0])
    later.StudyInstanceUID = "2.25." + str(uuid.uuid4().int)
    assert pacs_history(load_config(node.config_path), later) == [
        HistoryPoint("20260101", "L", points_from_sr(sr)[0].bmd_g_cm2, study_uid)]


def test_the_trend_reads_the_first_result_from_the_pacs_after_the_data_dir_was_wiped(
        archive, node_factory, write_phantom_study):
    patient = "TRD-" + uuid.uuid4().hex[:8].upper()
    first, first_files = write_phantom_study(1, patient_id=patient, accession="T1" + patient[-6:],
                                             study_date="20240105")
    second, second_files = write_phantom_study(1, patient_id=patient, accession="T2" + patient[-6:],
                                               study_date="20250310")
    upload_study(archive, first_files)
    node = requesting_node(node_factory, archive)
    assert node.cli("request", "--study-uid", first, "--from", "archive").ok
    first_sr = archive.instance_dataset(archive.wait_for_srs(first)[0].id)
    first_bmd = points_from_sr(first_sr)[0].bmd_g_cm2
    archive.wait_for_instances(first, lambda i: i.modality == SC_MODALITY)
    node.stop()
    shutil.rmtree(node.data_dir)  # a new data_dir: the node's own outputs are gone

    upload_study(archive, second_files)
    node.start()
    assert node.cli("request", "--study-uid", second, "--from", "archive").ok
    archive.wait_for_srs(second)
    picture = archive.wait_for_instances(second, lambda i: i.modality == SC_MODALITY)[0]

    history = node.wait_for_log(r"event=patient_history study=" + re.escape(second))
    assert "local_points=0 pacs_points=1 points=1" in history[0], history
    assert node.log_lines(r"event=priors_read pacs=archive srs=1 points=1")
    sc = archive.instance_dataset(picture.id)
    SHOT_DIR.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sc.pixel_array).save(SHOT_DIR / "trend-from-pacs.png")  # "Change since 2024-01-05: ..."
    # What the worker read: the first study's date, hand and DXR-BMD, from the PACS.
    priors = pacs_history(load_config(node.config_path), pydicom.dcmread(second_files[0]))
    assert priors == [HistoryPoint("20240105", "L", first_bmd, first)]
