"""End to end for issue 13: a phantom study through the real node with the PDF report, the HL7
ORU^R01 and the billing record all enabled.

The node sends SR, SC and PDF to a real Orthanc and the ORU to a real MLLP listener
(python-hl7's server, tests/node/hl7_helpers.py); the billing rows come from the real
``dxr-node billing export``. The phantom (tests/phantom.py) is measured on three metacarpals;
with a metal plate over III on two (modifier 52); its lateral view is refused.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import hl7
import pytest
from pydicom.uid import generate_uid

from tests import dicom_samples
from tests.integration.servers import NodeProcess, OrthancServer, store_statuses, wait_until
from tests.node.hl7_helpers import MllpListener, obx_numbers, part, sr_numbers
from tests.phantom import make_dataset, make_hand

PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "config" / "reference"


@pytest.fixture
def listener():
    with MllpListener() as running:
        yield running


@pytest.fixture
def result_node(orthanc: OrthancServer, node_factory, listener: MllpListener) -> NodeProcess:
    pacs = {**orthanc.as_destination("pacs"), "outputs": ["SR", "SC", "PDF"]}
    ris = {"name": "ris", "type": "hl7", "host": "127.0.0.1", "port": listener.port, "receiving_application": "RIS",
           "receiving_facility": "HOSP", "embed_pdf": True, "ack_timeout_seconds": 10}
    node = node_factory(destinations=[pacs, ris], quiet_period_seconds=1.0,
                        extra={"reference": {"dir": str(REFERENCE_DIR), "table": "black2001"}})
    check = node.cli("check-config", str(node.write_config()), with_config=False)
    assert check.ok, check
    return node.start()


def _study(directory: Path, views: list[dict], *, patient_id: str, accession: str,
           study_uid: str | None = None) -> tuple[str, list[Path]]:
    """One study of phantom images (``views``: make_hand keyword arguments), as a modality sends it."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = study_uid or generate_uid(), generate_uid()
    files = []
    for number, hand in enumerate(views, start=1):
        image, truth = make_hand(laterality="L", **hand)
        ds = make_dataset(image, truth, study_uid=study_uid, series_uid=series_uid, patient_id=patient_id)
        ds.AccessionNumber, ds.InstanceNumber, ds.Manufacturer = accession, number, "Phantom Modality Co"
        ds.ViewPosition = "PA" if hand.get("view", "PA") == "PA" else ""
        files.append(dicom_samples.save(ds, directory / f"{ds.SOPInstanceUID}.dcm"))
    return study_uid, files


def _billing(node: NodeProcess, study_uid: str) -> list[dict]:
    run = node.cli("billing", "export", "--since", "2000-01-01", "--format", "json")
    assert run.ok, run
    return [r for r in json.loads(run.output) if r["study_instance_uid"] == study_uid]


def _oru_for(listener: MllpListener, accession: str, count: int = 1) -> list[hl7.Message]:
    return wait_until(lambda: (m := [x for x in listener.messages if part(x.segment("OBR"), 3) == accession])
                      and len(m) >= count and m, 180, what=f"ORU for {accession}")


def _pdf_text(orthanc: OrthancServer, instance_id: str, tmp_path: Path) -> str:
    ds = orthanc.instance_dataset(instance_id)
    path = tmp_path / f"{instance_id}.pdf"
    path.write_bytes(ds.EncapsulatedDocument[:ds.EncapsulatedDocumentLength])
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout


def test_phantom_study_gets_pdf_in_orthanc_oru_at_the_listener_and_a_billing_row(
        orthanc: OrthancServer, result_node: NodeProcess, listener: MllpListener, tmp_path: Path) -> None:
    study_uid, files = _study(tmp_path / "full", [{"seed": 0}], patient_id="DXR13A", accession="ACC13A")
    assert store_statuses(result_node.store(files)) == ["Success"]
    outputs = orthanc.wait_for_instances(study_uid, lambda i: i.sop_class_uid in (SR_CLASS, PDF_CLASS), count=2,
                                         timeout_seconds=180)
    (pdf,) = [i for i in outputs if i.sop_class_uid == PDF_CLASS]
    (sr_instance,) = [i for i in outputs if i.sop_class_uid == SR_CLASS]
    assert pdf.modality == "DOC" and pdf.series_instance_uid != sr_instance.series_instance_uid
    sr = orthanc.instance_dataset(sr_instance.id)
    numbers = dict(((code, sub), value) for code, sub, value in _sr_values(sr))

    text = _pdf_text(orthanc, pdf.id, tmp_path)
    flat = " ".join(text.split())
    # The PDF writes the numbers as the picture does (T 2, BMD 3, scores 1 decimal), the SR with more
    # digits: each printed number is the SR's rounded (half a unit of the last printed digit).
    for bone in ("II", "III", "IV"):
        row = next(line for line in text.splitlines() if line.strip().startswith(f"MC {bone} "))
        assert _shows(row.split()[2], numbers[("DXR0001", bone)], 2), row
    assert _shows(re.search(r"DXR-BMD\s+(\S+) g/cm²", text).group(1), numbers[("DXR0004", "")], 3)
    assert _shows(re.search(r"T-score\s+(\S+)", text).group(1), numbers[("DXR0005", "")], 1)
    assert _shows(re.search(r"Z-score\s+(\S+)", text).group(1), numbers[("113071", "")], 1)
    assert "computed estimate from a radiograph, not DXA" in flat

    (message,) = _oru_for(listener, "ACC13A")
    assert part(message.segment("PID"), 3, 1) == "DXR13A" and part(message.segment("OBR"), 25) == "F"
    assert obx_numbers(message) == sr_numbers(sr)
    assert any(part(o, 2) == "ED" for o in message.segments("OBX"))

    (row,) = wait_until(lambda: _billing(result_node, study_uid), 30, what="billing row")
    assert (row["status"], row["modifier"], row["billable"], row["cpt_code"]) == ("performed", "", True, "0749T")
    assert (row["accession_number"], row["patient_id"], row["sr_uids"]) == ("ACC13A", "DXR13A", sr.SOPInstanceUID)


def _shows(printed: str, sr_value: str, decimals: int) -> bool:
    """``printed`` (true minus sign, ``decimals`` decimals) is the SR's value rounded to that many decimals."""
    return abs(float(printed.replace("\u2212", "-")) - float(sr_value)) <= 0.5 * 10 ** -decimals + 1e-9


def _sr_values(sr) -> list[tuple[str, str, str]]:
    """(code, bone or "", Numeric Value) of the SR's measurement groups (bone from the tracking identifier)."""
    values = []
    for container in sr.ContentSequence:
        if container.ConceptNameCodeSequence[0].CodeValue != "126010":
            continue
        for group in container.ContentSequence:
            items = group.get("ContentSequence", [])
            ident = next((str(i.TextValue) for i in items if i.ValueType == "TEXT"
                          and i.ConceptNameCodeSequence[0].CodeValue == "112039"), "")
            bone = ident.split(",")[0].split()[-1] if ident.startswith("Metacarpal") else ""
            values += [(i.ConceptNameCodeSequence[0].CodeValue, bone, str(i.MeasuredValueSequence[0].NumericValue))
                       for i in items if i.ValueType == "NUM"]
    return values


def test_two_bones_bill_modifier_52_and_a_refused_study_is_not_performed_with_its_oru_saying_why(
        orthanc: OrthancServer, result_node: NodeProcess, listener: MllpListener, tmp_path: Path) -> None:
    reduced_uid, reduced = _study(tmp_path / "reduced", [{"seed": 9, "metal_over": "III"}],
                                  patient_id="DXR13B", accession="ACC13B")
    refused_uid, refused = _study(tmp_path / "refused", [{"seed": 0, "view": "lateral"}],
                                  patient_id="DXR13C", accession="ACC13C")
    assert store_statuses(result_node.store(reduced + refused)) == ["Success"] * 2
    (reduced_oru,) = _oru_for(listener, "ACC13B")
    (refused_oru,) = _oru_for(listener, "ACC13C")
    (row,) = wait_until(lambda: _billing(result_node, reduced_uid), 30, what="billing row of the two-bone study")
    assert (row["status"], row["modifier"], row["billable"]) == ("performed", "52", True)
    extent = [part(o, 5, 2) for o in reduced_oru.segments("OBX") if part(o, 3, 1) == "DXR0021"]
    assert extent == ["Reduced service: two metacarpals measured"]

    (row,) = wait_until(lambda: _billing(result_node, refused_uid), 30, what="billing row of the refused study")
    assert (row["status"], row["billable"], row["modifier"]) == ("not_performed", False, "")
    assert row["not_performed_reason"] == "lateral_view"
    assert part(refused_oru.segment("OBR"), 25) == "X"
    reasons = [part(o, 5, 2) for o in refused_oru.segments("OBX") if part(o, 3, 1) == "DXR0060"]
    assert reasons == ["Lateral view"]
    notes = " ".join(refused_oru.unescape(part(n, 3)) for n in refused_oru.segments("NTE"))
    assert "was not performed" in notes and "lateral view" in notes


def test_reanalysis_after_a_late_image_leaves_one_billable_row(
        orthanc: OrthancServer, result_node: NodeProcess, listener: MllpListener, tmp_path: Path) -> None:
    study_uid, first = _study(tmp_path / "first", [{"seed": 0}], patient_id="DXR13D", accession="ACC13D")
    assert store_statuses(result_node.store(first)) == ["Success"]
    _oru_for(listener, "ACC13D")
    _, late = _study(tmp_path / "late", [{"seed": 0, "repeat": 1}], patient_id="DXR13D", accession="ACC13D",
                     study_uid=study_uid)
    assert store_statuses(result_node.store(late)) == ["Success"]
    first_oru, second_oru = _oru_for(listener, "ACC13D", count=2)
    assert part(second_oru.segment("OBR"), 25) == "C"  # a correction of the first result
    rows = wait_until(lambda: (r := _billing(result_node, study_uid)) and len(r) == 2 and r, 30,
                      what="two billing rows")
    assert [(r["run"], r["billable"], r["superseded_by_run"]) for r in rows] == [(1, False, 2), (2, True, None)]
    assert rows[1]["supersedes_sr_uids"] == rows[0]["sr_uids"]
    assert sum(r["billable"] for r in rows) == 1
