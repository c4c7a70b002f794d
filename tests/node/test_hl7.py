"""HL7 v2.5.1 ORU^R01 over MLLP: the message (parsed back with python-hl7, OBX values equal to
the SR's), and delivery through the exporter to a real MLLP listener (python-hl7's asyncio server):
AA, AE, AR, no ACK, a listener that comes up late, queue retry."""

from __future__ import annotations

import base64
import time

import hl7
import pydicom
import pytest
from pydicom.uid import generate_uid

from node.config import ConfigError, load_config
from node.dicom import output_kind
from node.export.exporter import deliver
from node.export.oru import build_oru, escape
from node.report import OutputOptions, build_study_outputs
from node.spool import Store
from tests.node.hl7_helpers import MllpListener, obx_numbers as _obx_numbers, part as _part, sr_numbers as _sr_numbers
from tests.node.node_helpers import make_config, write_config
from tests.node.outputs_inputs import hand_dataset, result_from_truth, view_refusal


def _config(tmp_path, port: int, extra: str = ""):
    return make_config(tmp_path, destinations=(
        f'[[destinations]]\nname = "ris"\ntype = "hl7"\nhost = "127.0.0.1"\nport = {port}\n'
        f'receiving_application = "RIS"\nreceiving_facility = "HOSP"\nack_timeout_seconds = 1\n{extra}'))


def _hl7_dest(tmp_path):
    return _config(tmp_path, 9).destination("ris")


def test_oru_obx_values_are_the_srs_and_names_are_escaped(tmp_path):
    source, truth = hand_dataset(patient_name="O'Brien|Smith^Mary&Jo~Ann")
    source.AccessionNumber = "ACC^7"
    sr, *_ = build_study_outputs([(source, result_from_truth(truth))], uid_seed="oru")
    oru = build_oru(sr, _hl7_dest(tmp_path), "C1")
    message = hl7.parse(oru.message)
    assert _part(message.segment("MSH"), 9) == "ORU^R01^ORU_R01" and _part(message.segment("MSH"), 12) == "2.5.1"
    pid = message.segment("PID")
    assert message.unescape(_part(pid, 5, 1)) == "O'Brien|Smith" and message.unescape(_part(pid, 5, 2)) == "Mary&Jo~Ann"
    assert _part(pid, 3, 1) == str(source.PatientID)
    obr = message.segment("OBR")
    assert message.unescape(_part(obr, 3)) == "ACC^7" and _part(obr, 4, 1) == "0749T" and _part(obr, 25) == "F"
    assert _obx_numbers(message) == _sr_numbers(sr)
    by_sub = {(_part(o, 3, 1), _part(o, 4)): _part(o, 5) for o in message.segments("OBX")}
    for name in ("II", "III", "IV"):  # per-bone T and W, the bone as sub-ID, in mm
        assert float(by_sub[("DXR0001", name)]) == pytest.approx(truth.bones[name].cortical_thickness_mm, abs=1e-3)
        assert float(by_sub[("103355008", name)]) == pytest.approx(truth.bones[name].outer_width_mm, abs=1e-3)
    units = {(_part(o, 3, 1)): (_part(o, 6, 1)) for o in message.segments("OBX") if _part(o, 2) == "NM"}
    assert (units["DXR0004"], units["DXR0001"]) == ("g/cm2", "mm")
    category = [o for o in message.segments("OBX") if _part(o, 3, 1) == "DXR0080"]
    assert len(category) == 1 and _part(category[0], 2) == "CWE"
    notes = " ".join(message.unescape(_part(n, 3)) for n in message.segments("NTE"))
    assert "computed estimate from a radiograph, not DXA" in notes and "Reference population" in notes
    assert escape("a|b^c&d~e\\f\rg") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f g"


def test_a_refused_studys_oru_says_not_performed_and_why(tmp_path):
    lateral, _ = hand_dataset(view="lateral")
    (sr,) = build_study_outputs([(lateral, view_refusal("lateral"))], uid_seed="oru-refused")
    oru = build_oru(sr, _hl7_dest(tmp_path), "C2")
    message = hl7.parse(oru.message)
    assert not oru.performed and _part(message.segment("OBR"), 25) == "X"
    assert _obx_numbers(message) == []
    reasons = [(_part(o, 5, 1)) for o in message.segments("OBX") if _part(o, 3, 1) == "DXR0060"]
    assert reasons == ["DXR0104"]  # Lateral view
    notes = " ".join(message.unescape(_part(n, 3)) for n in message.segments("NTE"))
    assert "was not performed" in notes and "lateral view" in notes


def _store_with_outputs(tmp_path, config, images, *, pdf: bool = False) -> Store:
    """A store whose one finished job has ``images``' outputs (files written) and their exports queued."""
    store = Store(config.data_dir)
    study = str(images[0][0].StudyInstanceUID)
    with store._tx() as c:
        c.execute("INSERT INTO studies VALUES (?, 'complete', 0, 0, 1)", (study,))
        c.execute("INSERT INTO jobs (study_instance_uid, run, state, created_at, updated_at) "
                  "VALUES (?, 1, 'running', 0, 0)", (study,))
    job_id = store._query("SELECT id FROM jobs")[0]["id"]
    recorded = []
    for ds in build_study_outputs(images, uid_seed=generate_uid(), options=OutputOptions(pdf=pdf, picture=False)):
        path = store.outputs_dir / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        recorded.append((str(ds.SOPInstanceUID), str(ds.SOPClassUID), output_kind(str(ds.SOPClassUID)),
                         str(path.relative_to(store.data_dir))))
    store.finish_job(job_id, recorded, {d.name: d.outputs for d in config.destinations})
    return store


def _measured(pdf_name: str = "Phantom^Hand"):
    source, truth = hand_dataset(patient_name=pdf_name)
    return [(source, result_from_truth(truth))]


def _deliver_due(config, store: Store, later_seconds: float = 0.0):
    batches = store.claim_due_exports(now=time.time() + later_seconds)
    for name, exports in batches.items():
        deliver(config, store, name, exports)
    return store.list_exports()


def test_an_acknowledged_oru_is_sent_with_the_pdf_as_ed(tmp_path):
    with MllpListener() as listener:
        config = _config(tmp_path, listener.port, "embed_pdf = true\n")
        store = _store_with_outputs(tmp_path, config, _measured(), pdf=True)
        (export,) = _deliver_due(config, store)  # the HL7 destination takes the SR only
        assert (export.state, export.attempts, export.last_error) == ("sent", 1, None)
    (message,) = listener.messages
    assert _part(message.segment("MSH"), 10) == f"DXR{export.id}-1"
    assert _part(message.segment("MSH"), 5) == "RIS" and _part(message.segment("MSH"), 6) == "HOSP"
    sr = pydicom.dcmread(store.data_dir / export.path)
    assert _obx_numbers(message) == _sr_numbers(sr)
    (ed,) = [o for o in message.segments("OBX") if _part(o, 2) == "ED"]
    assert [(_part(ed, 5, k)) for k in (2, 3, 4)] == ["AP", "PDF", "Base64"]
    document = base64.b64decode(_part(ed, 5, 5))
    (pdf_row,) = store._query("SELECT path FROM outputs WHERE kind='PDF'")
    pdf = pydicom.dcmread(store.data_dir / pdf_row["path"])
    assert document == bytes(pdf.EncapsulatedDocument[:pdf.EncapsulatedDocumentLength])


@pytest.mark.parametrize("ack, words", [("AE", "ACK AE (application error)"), ("AR", "ACK AR (application reject)")])
def test_ae_and_ar_are_failed_attempts_retried_then_failed_then_queue_retry(tmp_path, ack, words, capsys):
    from node.cli import main

    with MllpListener(ack=ack) as listener:
        config = _config(tmp_path, listener.port)
        store = _store_with_outputs(tmp_path, config, _measured())
        (export,) = _deliver_due(config, store)
        assert export.state == "queued" and words in export.last_error and "test listener" in export.last_error
        for _ in range(config.export.max_attempts - 1):
            (export,) = _deliver_due(config, store, later_seconds=60)
        assert (export.state, export.attempts) == ("failed", config.export.max_attempts)
        assert len(listener.messages) == config.export.max_attempts
        listener.ack = "AA"
        assert main(["queue", "retry", f"E{export.id}", "--config", str(config.path)]) == 0
        (export,) = _deliver_due(config, store)
        assert export.state == "sent"
    assert [str(m.segment("MSH")(10)) for m in listener.messages][-1] == f"DXR{export.id}-1"


def test_no_ack_is_a_timeout_and_a_late_listener_gets_the_message(tmp_path):
    with MllpListener(ack=None) as silent:
        config = _config(tmp_path, silent.port)
        store = _store_with_outputs(tmp_path, config, _measured())
        started = time.monotonic()
        (export,) = _deliver_due(config, store)
        assert time.monotonic() - started < 10
        assert export.state == "queued" and "no ACK within 1 s" in export.last_error, export.last_error
        assert len(silent.messages) == 1  # it arrived, but an unacknowledged message is not delivered
    (export,) = _deliver_due(config, store, later_seconds=60)  # nobody listens now
    assert export.state == "queued" and "ConnectionRefusedError" in export.last_error, export.last_error
    with MllpListener(port=silent.port) as late:
        (export,) = _deliver_due(config, store, later_seconds=60)
        assert export.state == "sent"
    assert len(late.messages) == 1


def test_a_refused_study_sends_a_not_performed_oru(tmp_path):
    lateral, _ = hand_dataset(view="lateral")
    with MllpListener() as listener:
        config = _config(tmp_path, listener.port)
        store = _store_with_outputs(tmp_path, config, [(lateral, view_refusal("lateral"))])
        (export,) = _deliver_due(config, store)
        assert export.state == "sent"
    (message,) = listener.messages
    assert _part(message.segment("OBR"), 25) == "X"


@pytest.mark.parametrize("entry, message", [
    ('type = "hl7"\nhost = "h"', "port is required"),
    ('type = "hl7"\nhost = "h"\nport = 2575\nsending_application = "A|B"', "sending_application must be"),
    ('type = "hl7"\nhost = "h"\nport = 2575\noutputs = ["SR"]', "outputs is not an hl7 key"),
    ('type = "folder"\nembed_pdf = true', 'embed_pdf is a key of type = "hl7" destinations only'),
    ('type = "hl7"\nhost = "h"\nport = 2575\nack_timeout_seconds = 0', "ack_timeout_seconds must be a number > 0"),
])
def test_hl7_destination_config_errors_name_the_key(tmp_path, entry, message):
    path = write_config(tmp_path, destinations=f'[[destinations]]\nname = "ris"\n{entry}\n')
    with pytest.raises(ConfigError, match=message.replace("|", "\\|")):
        load_config(path)


def test_echo_an_hl7_destination(tmp_path, capsys):
    from node.cli import main

    with MllpListener() as listener:
        config = _config(tmp_path, listener.port)
        assert main(["echo", "ris", "--config", str(config.path)]) == 0
        assert "connection accepted" in capsys.readouterr().out
    assert main(["echo", "ris", "--config", str(config.path), "--timeout", "2"]) == 1
    assert "ConnectionRefusedError" in capsys.readouterr().err




def test_the_shipped_hl7_and_pdf_examples_pass_check_config(tmp_path, capsys):
    """The commented examples of config/node.toml, uncommented as an admin would, are valid."""
    from pathlib import Path

    from node.cli import main

    lines = (Path(__file__).resolve().parents[2] / "config" / "node.toml").read_text().splitlines()
    blocks, current = [], None
    for line in lines:
        if line == "# [[destinations]]":
            current = ["[[destinations]]"]
            blocks.append(current)
        elif current is not None and line.startswith("# ") and "=" in line.split("#")[1]:
            current.append(line[2:])
        else:
            current = None
    names = [line.split("=", 1)[1].split("#")[0].strip().strip('"') for b in blocks for line in b
             if line.startswith("name")]
    assert {"pacs", "ris"} <= set(names), blocks  # every commented destination example is checked
    path = write_config(tmp_path, destinations="\n".join("\n".join(b) for b in blocks))
    (path.parent / "web-pacs.token").write_text("example-token\n")  # the DICOMweb example's token_file
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "pacs (dimse: SR+SC+PDF)" in out and "ris (hl7: ORU^R01)" in out
