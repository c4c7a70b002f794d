"""Who may talk to the node, and bad input that must never take it down (real DCMTK + pynetdicom SCU)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid
from pynetdicom import AE, _config

from tests import dicom_samples
from tests.integration.servers import (
    HOST,
    TEST_SCU_AET,
    NodeProcess,
    OrthancServer,
    echoscu,
    store_statuses,
    storescu,
)


@pytest.fixture
def node(orthanc: OrthancServer, node_factory) -> NodeProcess:
    """A node whose ORTHANC source is pinned to loopback and with one source pinned elsewhere."""
    node = node_factory(
        sources=[("ORTHANC", HOST), ("PINNED", "192.0.2.7")],
        destinations=[orthanc.as_destination("pacs")], quiet_period_seconds=0.5)
    return node.start()


def _assert_still_serving(node: NodeProcess) -> None:
    assert node.running, node.log_tail()
    echo = node.echo()
    assert echo.ok, f"{echo}\n{node.log_tail()}"


# ------------------------------------------------------------------------ association checks


def test_unknown_calling_ae_is_rejected_and_logged(node: NodeProcess, write_study) -> None:
    echo = echoscu(node.port, aet="STRANGER", called=node.ae_title)
    assert not echo.ok
    assert "Association Rejected" in echo.output, echo

    study_uid, files = write_study(1)
    store = storescu(files, node.port, aet="STRANGER", called=node.ae_title)
    assert not store.ok and store_statuses(store) == [], store
    assert node.stored_instances(study_uid) == []
    assert node.log_lines(r"association_rejected.*STRANGER"), node.log_tail()
    _assert_still_serving(node)


def test_wrong_called_ae_is_rejected_and_logged(node: NodeProcess, write_study) -> None:
    echo = echoscu(node.port, aet=TEST_SCU_AET, called="NOTTHENODE")
    assert not echo.ok
    assert "Association Rejected" in echo.output, echo

    study_uid, files = write_study(1)
    store = storescu(files, node.port, aet=TEST_SCU_AET, called="NOTTHENODE")
    assert not store.ok and store_statuses(store) == [], store
    assert node.stored_instances(study_uid) == []
    assert node.log_lines(r"association_rejected.*NOTTHENODE"), node.log_tail()
    _assert_still_serving(node)


def test_allowed_ae_title_from_a_host_it_is_not_pinned_to_is_rejected(node: NodeProcess) -> None:
    echo = echoscu(node.port, aet="PINNED", called=node.ae_title)
    assert not echo.ok and "Association Rejected" in echo.output, echo
    assert node.log_lines(r"association_rejected.*PINNED.*192\.0\.2\.7"), node.log_tail()
    # The same title check passes for a source pinned to the address we really come from.
    assert echoscu(node.port, aet="ORTHANC", called=node.ae_title).ok


# ------------------------------------------------------------------------ bad input


@contextlib.contextmanager
def _association(node: NodeProcess, *sop_classes: str, transfer_syntax: str = ExplicitVRLittleEndian) -> Iterator:
    """A pynetdicom association as TEST_SCU_AET that sends file bytes unchanged (no decode)."""
    ae = AE(ae_title=TEST_SCU_AET)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class, [transfer_syntax])
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are, even if broken
    assoc = ae.associate(HOST, node.port, ae_title=node.ae_title)
    try:
        assert assoc.is_established, node.log_tail()
        yield assoc
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        if assoc.is_established:
            assoc.release()


def _send(node: NodeProcess, path: Path, sop_class: str, transfer_syntax: str = ExplicitVRLittleEndian) -> int:
    with _association(node, sop_class, transfer_syntax=transfer_syntax) as assoc:
        status = assoc.send_c_store(path)
        assert "Status" in status, f"no C-STORE response for {path.name}\n{node.log_tail()}"
        return int(status.Status)


def _is_failure(status: int) -> bool:
    # PS3.4 B.2.3: 0x0000 success, 0xB000/0xB007/0xB006 warnings, everything else a failure.
    return status not in (0x0000, 0xB000, 0xB006, 0xB007)


def _assert_refused(node: NodeProcess, status: int, ds: Dataset) -> None:
    """A DIMSE failure status, a log line naming the instance, and nothing stored."""
    assert _is_failure(status), hex(status)
    assert node.log_lines(rf"instance_refused.*{ds.SOPInstanceUID}"), node.log_tail()
    assert node.stored_instances(ds.StudyInstanceUID) == []


def _assert_reported_unmeasurable(node: NodeProcess, orthanc: OrthancServer, ds: Dataset) -> None:
    """Stored, analysed, and an SR back in the PACS saying why there is no measurement."""
    srs = orthanc.wait_for_srs(ds.StudyInstanceUID)
    assert len(srs) == 1
    report = orthanc.instance_dataset(srs[0].id)
    texts = [item.get("TextValue", "") for item in _walk_content(report)]
    assert any("No DXR measurement" in t for t in texts), texts
    assert node.log_lines(rf"{ds.StudyInstanceUID}.*(unmeasur|refus|unreadable|not measured)"), node.log_tail()


def _walk_content(ds: Dataset) -> Iterator[Dataset]:
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _walk_content(item)


def test_truncated_dataset_never_takes_the_node_down(node: NodeProcess, orthanc: OrthancServer,
                                                      tmp_path: Path) -> None:
    ds = dicom_samples.make_image_dataset()
    path = dicom_samples.save(ds, tmp_path / "whole.dcm")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) * 3 // 5])  # cut in the middle of the pixel data
    status = _send(node, truncated, ds.SOPClassUID)
    # The header parses; the receiver checks native pixel data against Rows x Columns x bits, so
    # this never reaches the spool: PS3.4 0xA900 "data set does not match SOP class".
    assert status == 0xA900, hex(status)
    _assert_refused(node, status, ds)
    _assert_still_serving(node)


def test_truncated_header_never_takes_the_node_down(node: NodeProcess, orthanc: OrthancServer,
                                                     tmp_path: Path) -> None:
    ds = dicom_samples.make_image_dataset()
    path = dicom_samples.save(ds, tmp_path / "whole.dcm")
    data = path.read_bytes()
    cut = data.index(b"\x20\x00\x0d\x00")  # (0020,000D) StudyInstanceUID: cut inside its value
    truncated = tmp_path / "truncated-header.dcm"
    truncated.write_bytes(data[: cut + 12])
    status = _send(node, truncated, ds.SOPClassUID)
    assert _is_failure(status), hex(status)
    assert node.log_lines(r"instance_refused"), node.log_tail()
    _assert_still_serving(node)


def test_wrong_pixel_data_length_never_takes_the_node_down(node: NodeProcess, orthanc: OrthancServer,
                                                           tmp_path: Path) -> None:
    ds = dicom_samples.make_image_dataset()
    ds.PixelData = ds.PixelData[: 100_000]  # 256 x 256 x 2 bytes would be 131072
    path = dicom_samples.save(ds, tmp_path / "short-pixels.dcm")
    status = _send(node, path, ds.SOPClassUID)
    assert status == 0xA900, hex(status)  # PS3.4 "data set does not match SOP class" (docs/dicomweb.md)
    _assert_refused(node, status, ds)
    _assert_still_serving(node)


def test_undecodable_compressed_pixel_data_is_stored_and_reported_unmeasurable(
        node: NodeProcess, orthanc: OrthancServer, tmp_path: Path) -> None:
    """The receive path never decodes pixels, so a broken JPEG is stored; the job then says why."""
    ds = dicom_samples.make_image_dataset()
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    not_a_jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"
    ds.PixelData = encapsulate([not_a_jpeg])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path = dicom_samples.save(ds, tmp_path / "broken-jpeg.dcm")
    status = _send(node, path, ds.SOPClassUID, JPEGBaseline8Bit)
    assert status == 0x0000, hex(status)
    assert len(node.stored_instances(ds.StudyInstanceUID)) == 1
    _assert_reported_unmeasurable(node, orthanc, ds)
    assert node.log_lines(rf"{ds.SOPInstanceUID}.*(unreadable|reason=unreadable)"), node.log_tail()
    # The decoder's traceback must not break "one line per event".
    stray = [line for line in node.log_text().splitlines()
             if line and not line.startswith("===") and not re.match(r"\d{4}-\d\d-\d\dT", line)]
    assert not stray, stray[:5]
    _assert_still_serving(node)


def test_non_image_sop_class_is_acknowledged_and_not_analysed(node: NodeProcess, orthanc: OrthancServer,
                                                              tmp_path: Path) -> None:
    ds = dicom_samples.make_sr_dataset()
    path = dicom_samples.save(ds, tmp_path / "foreign-sr.dcm")
    status = _send(node, path, ds.SOPClassUID)
    # Acknowledged (the PACS must not retry it forever) and dropped by the rules, not stored.
    assert status == 0x0000, hex(status)
    assert node.log_lines(rf"instance_dropped.*{ds.SOPInstanceUID}"), node.log_tail()
    assert node.stored_instances(ds.StudyInstanceUID) == []
    # A class the node does not accept at all is refused at negotiation, and the node keeps serving.
    with _association(node, dicom_samples.CR_IMAGE_STORAGE, dicom_samples.ENCAPSULATED_PDF_STORAGE) as assoc:
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        assert dicom_samples.CR_IMAGE_STORAGE in accepted
        assert dicom_samples.ENCAPSULATED_PDF_STORAGE not in accepted
    assert node.jobs(ds.StudyInstanceUID) == []
    _assert_still_serving(node)


def test_dataset_without_study_instance_uid_gets_a_failure_status(node: NodeProcess, tmp_path: Path) -> None:
    ds = dicom_samples.make_image_dataset()
    del ds.StudyInstanceUID
    path = dicom_samples.save(ds, tmp_path / "no-study-uid.dcm")
    status = _send(node, path, ds.SOPClassUID)
    assert _is_failure(status), hex(status)
    assert node.log_lines(rf"instance_refused.*{ds.SOPInstanceUID}"), node.log_tail()
    assert node.db_rows("SELECT * FROM instances WHERE sop_instance_uid = ?", ds.SOPInstanceUID) == []
    _assert_still_serving(node)


def test_bad_inputs_in_one_association_each_get_an_answer(node: NodeProcess, tmp_path: Path) -> None:
    """A broken instance fails alone: the good instance after it on the same association is stored."""
    bad = dicom_samples.make_image_dataset()
    del bad.StudyInstanceUID
    bad_path = dicom_samples.save(bad, tmp_path / "bad.dcm")
    good = dicom_samples.make_image_dataset(generate_uid())
    good_path = dicom_samples.save(good, tmp_path / "good.dcm")
    with _association(node, dicom_samples.CR_IMAGE_STORAGE) as assoc:
        statuses = [int(assoc.send_c_store(p).Status) for p in (bad_path, good_path)]
    assert _is_failure(statuses[0]) and statuses[1] == 0x0000, [hex(s) for s in statuses]
    assert len(node.stored_instances(good.StudyInstanceUID)) == 1
    _assert_still_serving(node)
