"""The encapsulated PDF report: Modality DOC in its own series of the source study, valid for
dciodvfy, and its text (poppler's pdftotext) and pages (pdftoppm) hold the result."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from node.report import OutputOptions, build_study_outputs
from node.report.history import HistoryPoint
from node.report.pdf import METHOD_STATEMENT
from node.report.style import fmt
from node.spool import Store
from tests.node.outputs_inputs import hand_dataset, result_from_truth, run_tool, save, view_refusal
from tests.node.test_dciodvfy import _check


def _poppler(name: str) -> str:
    import shutil

    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package poppler-utils; `make debs`)")
    return path


def _pdf(tmp_path, **kwargs):
    source, truth = hand_dataset(**kwargs.pop("dataset", {}))
    result = result_from_truth(truth, **kwargs.pop("result", {}))
    outputs = build_study_outputs([(source, result)], uid_seed="pdf-test", options=OutputOptions(pdf=True, **kwargs))
    document = outputs[-1]
    path = tmp_path / "report.pdf"
    path.write_bytes(document.EncapsulatedDocument[:document.EncapsulatedDocumentLength])
    return source, result, outputs, path


def _text(path) -> str:
    run = run_tool(_poppler("pdftotext"), "-layout", path, "-")
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.parametrize("charset, name", [("ISO_IR 100", "Müller^Jürgen"), ("ISO_IR 192", "Đặng^Thị Ngọc Ánh")])
def test_pdf_report_is_a_doc_instance_in_its_own_series_and_passes_dciodvfy(tmp_path, charset, name):
    source, result, outputs, path = _pdf(tmp_path, dataset=dict(charset=charset, patient_name=name, modality="DX"))
    assert [o.Modality for o in outputs] == ["SR", "OT", "DOC"]
    document = outputs[-1]
    assert document.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert document.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert document.StudyInstanceUID == source.StudyInstanceUID and document.PatientID == source.PatientID
    assert len({o.SeriesInstanceUID for o in outputs} | {source.SeriesInstanceUID}) == 4
    assert document.SourceInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert path.read_bytes().startswith(b"%PDF-")
    _check(save(document, tmp_path / "pdf.dcm"), f"PDF {charset}")
    family, given = name.split("^")
    assert f"{family}, {given}" in _text(path)


def test_pdf_text_holds_each_bone_and_the_scores_with_the_reference_and_the_method(tmp_path):
    source, result, _, path = _pdf(tmp_path)
    text = _text(path)
    for name in ("II", "III", "IV"):
        bone = result.bones[name]
        row = next(line for line in text.splitlines() if line.strip().startswith(f"MC {name} "))
        assert fmt(bone.cortical_thickness_mm, 2) in row and fmt(bone.outer_width_mm, 2) in row, row
    assert f"{fmt(result.dxr_bmd_g_cm2, 3)} g/cm²" in text
    assert f"T-score {fmt(result.t_score, 1, signed=True)}" in " ".join(text.split())
    assert f"Z-score {fmt(result.z_score, 1, signed=True)}" in " ".join(text.split())
    assert result.reference_name in text and "PROVISIONAL" in text
    flat = " ".join(text.split())
    assert "computed estimate from a radiograph, not DXA" in flat and " ".join(METHOD_STATEMENT.split()) in flat
    assert f"Analysis version {result.analysis_version}" in flat
    assert str(source.PatientID) in text and "left hand" in text


def test_pdf_pages_render_with_the_result_picture(tmp_path):
    _, _, _, path = _pdf(tmp_path)
    run = run_tool(_poppler("pdftoppm"), "-r", "40", "-png", path, tmp_path / "page")
    assert run.returncode == 0, run.stderr
    pages = sorted(tmp_path.glob("page*.png"))
    assert 1 <= len(pages) <= 2
    page = np.asarray(Image.open(pages[0]).convert("RGB"))
    assert page.shape[0] > page.shape[1]  # A4 portrait
    # The result picture is a black page with coloured text: a large dark block on the white report.
    dark_rows = (page.mean(axis=2) < 40).mean(axis=1) > 0.5
    assert dark_rows.sum() > 0.2 * page.shape[0], dark_rows.sum()


def test_reduced_service_and_trend_are_in_the_pdf(tmp_path):
    source, truth = hand_dataset()
    history = [HistoryPoint("20240101", "L", 0.650, "1.2.3")]
    result = result_from_truth(truth, refuse_bone="II")
    outputs = build_study_outputs([(source, result)], uid_seed="pdf-trend",
                                  options=OutputOptions(pdf=True, history=history, picture=False))
    assert [o.Modality for o in outputs] == ["SR", "DOC"]
    path = tmp_path / "r.pdf"
    path.write_bytes(outputs[-1].EncapsulatedDocument[:outputs[-1].EncapsulatedDocumentLength])
    flat = " ".join(_text(path).split())
    assert "MC II not measured: Metal lies over the measurement region of this bone." in flat
    assert "2 of 3 (reduced service, CPT modifier 52)" in flat
    assert "Change since 2024-01-01:" in flat and "least significant change" in flat


def test_a_refused_study_gets_no_pdf(tmp_path):
    lateral, _ = hand_dataset(view="lateral")
    outputs = build_study_outputs([(lateral, view_refusal("lateral"))], uid_seed="pdf-refused",
                                  options=OutputOptions(pdf=True))
    assert [o.Modality for o in outputs] == ["SR"]


def test_each_output_kind_is_queued_only_to_the_destinations_that_take_it(tmp_path):
    store = Store(tmp_path)
    study = generate_uid()
    with store._tx() as c:
        c.execute("INSERT INTO studies VALUES (?, 'complete', 0, 0, 1)", (study,))
        c.execute("INSERT INTO jobs (study_instance_uid, run, state, created_at, updated_at) VALUES (?, 1, 'running', 0, 0)",
                  (study,))
    job_id = store._query("SELECT id FROM jobs")[0]["id"]
    outputs = [("1.1", "1.2.840.10008.5.1.4.1.1.88.33", "SR", "a"), ("1.2", "1.2.840.10008.5.1.4.1.1.7", "SC", "b"),
               ("1.3", "1.2.840.10008.5.1.4.1.1.104.1", "PDF", "c")]
    queued = store.finish_job(job_id, outputs, {"pacs": ("SR", "SC"), "ris": ("PDF",), "all": ("SR", "SC", "PDF")})
    assert queued == 6
    assert sorted((e.destination, e.output_sop_instance_uid) for e in store.list_exports()) == [
        ("all", "1.1"), ("all", "1.2"), ("all", "1.3"), ("pacs", "1.1"), ("pacs", "1.2"), ("ris", "1.3")]
