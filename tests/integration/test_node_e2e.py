"""End to end with a real Orthanc and DCMTK: modality -> Orthanc -> node -> SR back in Orthanc."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from tests import dicom_samples
from tests.integration.servers import (
    HOST,
    NodeProcess,
    OrthancServer,
    free_port,
    echoscu,
    store_statuses,
    storescu,
    wait_until,
)


def _send_marker_study(node: NodeProcess, orthanc: OrthancServer, tmp_path: Path) -> None:
    """Send a fresh one-image study to the node and wait for its SR in Orthanc.

    The node assembles studies in arrival order with the same quiet period, so once this
    later study has been analysed and delivered, any job an earlier send would have caused
    exists too: absence checks after this are not races.
    """
    study_uid, files = dicom_samples.write_study(tmp_path / "marker", 1, patient_id="MARKER")
    result = node.store(files)
    assert store_statuses(result) == ["Success"], result
    orthanc.wait_for_srs(study_uid)


def test_orthanc_routes_cr_dx_to_the_node_address_and_never_returns_node_outputs(
        orthanc: OrthancServer, write_study, tmp_path: Path) -> None:
    """The harness itself: Lua routing with DCMTK storescp standing in for the node."""
    received = tmp_path / "storescp"
    received.mkdir()
    port = free_port()
    scp = subprocess.Popen(["storescp", "-aet", "DXRNODE", "-od", str(received), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: echoscu(port, called="DXRNODE").ok, 10, what="storescp up")
        orthanc.route_to_node(("DXRNODE", port))
        study_uid, files = write_study(2)
        result = storescu(files, orthanc.dicom_port, called=orthanc.aet)
        assert store_statuses(result) == ["Success", "Success"], result

        # Not to be routed: a foreign SR, and a CR that the node itself sent (loop guard).
        sr = dicom_samples.save(dicom_samples.make_sr_dataset(study_uid), tmp_path / "other" / "sr.dcm")
        own = dicom_samples.save(dicom_samples.make_image_dataset(study_uid), tmp_path / "other" / "own.dcm")
        assert storescu([sr], orthanc.dicom_port, called=orthanc.aet).ok
        assert storescu([own], orthanc.dicom_port, aet="DXRNODE", called=orthanc.aet).ok
        # Orthanc's Lua runs callbacks in order: once a later CR has arrived, the two above were decided.
        _, marker = write_study(1)
        assert storescu(marker, orthanc.dicom_port, called=orthanc.aet).ok

        expected = {f.stem for f in files} | {marker[0].stem}
        names = wait_until(lambda: (n := {p.name.split(".", 1)[1] for p in received.iterdir()
                                          if not p.name.startswith(".")}) >= expected and n, 30,
                           what="routed instances at storescp")
        assert names == expected
    finally:
        os.killpg(scp.pid, signal.SIGTERM)
        scp.wait(timeout=10)


def test_study_sent_to_orthanc_comes_back_with_the_node_sr_in_the_same_study(
        orthanc: OrthancServer, routed_node: NodeProcess, write_phantom_study, tmp_path: Path) -> None:
    study_uid, files = write_phantom_study(1, patient_name=dicom_samples.PATIENT_NAME, patient_id="DXRTEST1")
    result = storescu(files, orthanc.dicom_port, called=orthanc.aet)
    assert store_statuses(result) == ["Success"], result
    last_instance_in_orthanc = time.monotonic()

    srs = orthanc.wait_for_srs(study_uid, interval_seconds=0.05)
    latency_seconds = time.monotonic() - last_instance_in_orthanc
    quiet = routed_node.config["study"]["quiet_period_seconds"]
    print(f"\nE2E latency, last instance stored in Orthanc -> node SR stored in Orthanc: "
          f"{latency_seconds:.2f} s (quiet period {quiet} s)")

    assert len(srs) == 1
    sr = srs[0]
    assert sr.remote_aet == routed_node.ae_title
    ds = orthanc.instance_dataset(sr.id)
    assert ds.StudyInstanceUID == study_uid
    assert ds.PatientID == "DXRTEST1"
    assert _referenced_uids(ds.get("CurrentRequestedProcedureEvidenceSequence", [])) == {f.stem for f in files}
    # The copy Orthanc holds is a readable SR for DCMTK too (full validation: issue 5's tests).
    sr_file = tmp_path / "sr.dcm"
    sr_file.write_bytes(orthanc.instance_file(sr.id))
    dump = subprocess.run(["dsrdump", str(sr_file)], capture_output=True, text=True)
    assert dump.returncode == 0 and "E:" not in dump.stderr, dump.stderr

    # The node analysed the study once and received only the CR (its SR was not routed back).
    jobs = routed_node.jobs(study_uid)
    assert [j["state"] for j in jobs] == ["done"]
    assert {r["sop_instance_uid"] for r in routed_node.stored_instances(study_uid)} == {f.stem for f in files}
    # Logs name AE titles and UIDs, never the patient.
    log = routed_node.log_text()
    assert study_uid in log
    assert dicom_samples.PATIENT_NAME.split("^")[0] not in log


def test_same_sop_instance_uid_twice_is_stored_once_and_analysed_once(
        orthanc: OrthancServer, routed_node: NodeProcess, write_study, tmp_path: Path) -> None:
    study_uid, (first, second) = write_study(2)
    # Twice in one association, before the study is complete ...
    result = routed_node.store([first, first, second])
    assert store_statuses(result) == ["Success"] * 3, result
    orthanc.wait_for_srs(study_uid)
    # ... and again after its job ran: acknowledged, but must not re-open the study.
    result = routed_node.store([first])
    assert store_statuses(result) == ["Success"], result
    _send_marker_study(routed_node, orthanc, tmp_path)

    assert len(routed_node.stored_instances(study_uid)) == 2
    assert [j["state"] for j in routed_node.jobs(study_uid)] == ["done"]
    assert len(orthanc.sr_instances(study_uid)) == 1
    spooled = [p for p in routed_node.data_dir.joinpath("spool").rglob("*") if p.is_file() and first.stem in p.name]
    assert len(spooled) == 1, spooled
    assert routed_node.log_lines(rf"(?i)duplicate.*{first.stem}|{first.stem}.*duplicate"), routed_node.log_tail()


COMPRESSORS = {
    # transfer syntax UID: DCMTK command compressing IN to OUT
    "1.2.840.10008.1.2.4.70": ["dcmcjpeg", "+e1"],  # JPEG Lossless, first-order prediction (SV1)
    "1.2.840.10008.1.2.4.51": ["dcmcjpeg", "+ee"],  # JPEG Extended (12 bit, lossy)
    "1.2.840.10008.1.2.5": ["dcmcrle"],  # RLE Lossless
    "1.2.840.10008.1.2.4.90": ["pydicom"],  # JPEG 2000 Lossless (DCMTK has no JPEG 2000 codec)
}


def test_compressed_cr_routed_by_orthanc_is_received_as_stored_and_decoded(
        orthanc: OrthancServer, routed_node: NodeProcess, write_study, tmp_path: Path) -> None:
    if missing := [cmd[0] for cmd in COMPRESSORS.values() if cmd[0] != "pydicom" and not shutil.which(cmd[0])]:
        pytest.skip(f"DCMTK compressors missing: {missing}")
    study_uid, files = write_study(len(COMPRESSORS))
    compressed = []
    for (syntax, cmd), src in zip(COMPRESSORS.items(), files):
        out = tmp_path / f"{src.stem}.{cmd[0]}.dcm"
        if cmd[0] == "pydicom":
            ds = pydicom.dcmread(src)
            ds.compress(syntax)  # pylibjpeg-openjpeg encoder
            ds.save_as(out, enforce_file_format=True)
        else:
            subprocess.run([*cmd, str(src), str(out)], check=True, capture_output=True)
        compressed.append(out)
    for path in compressed:
        assert orthanc.upload(path)["Status"] == "Success"
    orthanc.wait_for_srs(study_uid)

    # Lossy compression gives the image a new SOP Instance UID: take the UIDs from the files sent.
    sent = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: syntax
            for p, syntax in zip(compressed, COMPRESSORS)}
    stored = {r["sop_instance_uid"]: r["transfer_syntax_uid"] for r in routed_node.stored_instances(study_uid)}
    assert stored == sent  # nobody transcoded on the way
    for sop_uid in sent:
        (line,) = routed_node.log_lines(rf"event=image_analysed .*sop={sop_uid}")
        assert "reason=unreadable" not in line and "status=error" not in line, line


def _referenced_uids(sequence) -> set[str]:
    return {ref.ReferencedSOPInstanceUID for study in sequence for series in study.ReferencedSeriesSequence
            for ref in series.ReferencedSOPSequence}


def test_late_instance_reopens_the_study_and_the_new_sr_supersedes_the_first(
        orthanc: OrthancServer, routed_node: NodeProcess, write_study, tmp_path: Path) -> None:
    study_uid, files = write_study(2)
    assert store_statuses(storescu(files[:1], orthanc.dicom_port, called=orthanc.aet)) == ["Success"]
    (first,) = orthanc.wait_for_srs(study_uid)

    assert store_statuses(storescu(files[1:], orthanc.dicom_port, called=orthanc.aet)) == ["Success"]
    srs = orthanc.wait_for_srs(study_uid, count=2)
    (second,) = [sr for sr in srs if sr.id != first.id]
    ds = orthanc.instance_dataset(second.id)
    assert _referenced_uids(ds.PredecessorDocumentsSequence) == {first.sop_instance_uid}
    assert _referenced_uids(ds.CurrentRequestedProcedureEvidenceSequence) == {f.stem for f in files}
    assert [(j["run"], j["state"]) for j in routed_node.jobs(study_uid)] == [(1, "done"), (2, "done")]


def test_cli_echo_reaches_orthanc_and_names_an_unreachable_destination_in_one_line(
        orthanc: OrthancServer, node_factory) -> None:
    node = node_factory(destinations=[orthanc.as_destination("pacs"),
                                      {"name": "nobody", "ae_title": "NOBODY", "host": HOST, "port": free_port()}])
    node.write_config()
    assert node.cli("check-config", str(node.config_path), with_config=False).ok

    echo = node.cli("echo", "pacs")
    assert echo.ok, echo
    assert "pacs" in echo.output

    down = node.cli("echo", "nobody")
    assert down.returncode != 0
    lines = down.output.strip().splitlines()
    assert len(lines) == 1 and "nobody" in lines[0] and "Traceback" not in down.output, down

    unknown = node.cli("echo", "no-such-destination")
    assert unknown.returncode != 0 and len(unknown.output.strip().splitlines()) == 1, unknown
