"""End to end for issue 5: a PA + oblique + lateral hand study through Orthanc and the node.

Real Orthanc, real DCMTK storescu, the real node and engine: the study must come back with
exactly one SR and one SC, measured on the PA, with the oblique and lateral views listed in
the SR as not used and why.

The PA is the first input the engine measures: the phantom's (tests/phantom.py), else a real
radiograph from FracAtlas (Abedeen et al., Sci Data 10 (2023), doi:10.1038/s41597-023-02432-4,
CC BY 4.0), read from ``../shared/data/real-hands`` and wrapped as DICOM with an assumed 0.1 mm
pixel spacing (FracAtlas publishes none). With a real PA the oblique and lateral views are real
FracAtlas rejects too: different hands in one made-up study, as the node does not compare
anatomy across images. A study without a measurable PA must come back with one refusal SR.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pytest
from pydicom.uid import generate_uid

from node.report import codes
from tests import dicom_samples
from tests.integration.servers import NodeProcess, OrthancServer, store_statuses, storescu
from tests.phantom import make_dataset, make_hand

SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
REAL_HANDS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-hands"
REAL_PA = sorted(p.name for p in REAL_HANDS.glob("fracatlas_*_adult_*_PA.jpg")) if REAL_HANDS.is_dir() else []
REAL_OTHER = {"oblique": "fracatlas_IMG0000205_oblique_reject.jpg", "lateral": "fracatlas_IMG0000023_lateral_reject.jpg"}


def _real(name: str, laterality: str, **kwargs):
    import numpy as np
    from PIL import Image

    path = REAL_HANDS / name
    if not path.exists():
        pytest.skip(f"real hand radiograph {name} not found in {REAL_HANDS} (../shared/data/real-hands)")
    image = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    return make_dataset(image, None, spacing_mm=0.1, laterality=laterality, **kwargs)


def _phantom(view: str, **kwargs):
    image, truth = make_hand(seed=0, laterality="L", view=view)
    return make_dataset(image, truth, **kwargs)


def _candidates():
    """PA inputs in order of preference: the phantom, then the real adult PAs."""
    yield "phantom PA", "L", lambda **kw: _phantom("PA", **kw)
    for name in REAL_PA:
        laterality = "L" if "_L_" in name else "R"
        yield name, laterality, (lambda name=name, laterality=laterality, **kw: _real(name, laterality, **kw))


@pytest.fixture(scope="module")
def measurable_pa():
    """``(label, laterality, make, result)``: the first PA input the engine measures, with the
    engine's result computed here in the test process; fails, naming every verdict, when there is none."""
    import analysis

    verdicts = []
    for label, laterality, make in _candidates():
        result = analysis.analyse(make())
        if result.status == "ok":
            return label, laterality, make, result
        verdicts.append(f"{label}: {result.reason}")
    pytest.fail("precondition: the engine measures none of the PA inputs (" + "; ".join(verdicts) + ")")


def _non_pa_reason(path: Path) -> str:
    """The engine's refusal reason for a saved oblique or lateral view, computed in this process:
    a lateral or oblique view (the phantom's oblique hand lies at the border between the two:
    tests/analysis/test_locate.py), and lateral for the stacked fingers of the phantom's lateral."""
    import analysis
    import pydicom

    result = analysis.analyse(pydicom.dcmread(path))
    assert result.status == "refused" and result.reason in ("oblique_view", "lateral_view"), (path.name, result.reason)
    return result.reason


def _tidy(ds, number: int, view: str):
    ds.InstanceNumber = number
    ds.ViewPosition = "PA" if view == "PA" else ""
    ds.Manufacturer = "DXR test input"  # not "DXR Node...": the node ignores its own outputs
    return ds


def _write_three_views(directory: Path, measurable_pa) -> tuple[str, dict[str, Path]]:
    """PA, oblique and lateral views of one side, one series, as a modality would send them."""
    label, laterality, make_pa, _ = measurable_pa
    study_uid, series_uid = generate_uid(), generate_uid()
    common = dict(study_uid=study_uid, series_uid=series_uid, patient_id="DXRE2E5",
                  patient_name="Dreiansicht^Hand", charset="ISO_IR 100")
    datasets = {"PA": make_pa(**common)}
    for view in ("oblique", "lateral"):
        # the phantom's own views go with the phantom PA; real ones with a real PA
        datasets[view] = (_phantom(view, **common) if label == "phantom PA"
                          else _real(REAL_OTHER[view], laterality, **common))
    files = {}
    for number, (view, ds) in enumerate(datasets.items(), start=1):
        files[view] = dicom_samples.save(_tidy(ds, number, view), directory / f"{ds.SOPInstanceUID}.dcm")
    return study_uid, files


def test_three_views_yield_one_sr_and_one_sc_measured_on_the_pa(
        measurable_pa, orthanc: OrthancServer, routed_node: NodeProcess, tmp_path: Path) -> None:
    (tmp_path / "study").mkdir()
    study_uid, files = _write_three_views(tmp_path / "study", measurable_pa)
    result = storescu(list(files.values()), orthanc.dicom_port, called=orthanc.aet)
    assert store_statuses(result) == ["Success"] * 3, result

    node_outputs = orthanc.wait_for_instances(
        study_uid, lambda i: i.sop_class_uid in (SR_CLASS, SC_CLASS), count=2, timeout_seconds=180)
    # The job is done and its exports delivered: nothing more can arrive for this study.
    assert [j["state"] for j in routed_node.jobs(study_uid)] == ["done"]
    instances = orthanc.instances(study_uid)
    srs = [i for i in instances if i.sop_class_uid == SR_CLASS]
    scs = [i for i in instances if i.sop_class_uid == SC_CLASS]
    assert (len(srs), len(scs)) == (1, 1), [(i.modality, i.sop_class_uid) for i in instances]
    assert {i.remote_aet for i in node_outputs} == {routed_node.ae_title}
    # Each in its own series of the source study.
    source_series = {i.series_instance_uid for i in instances if i.modality in ("CR", "DX")}
    assert len({srs[0].series_instance_uid, scs[0].series_instance_uid} | source_series) == 3

    sr = orthanc.instance_dataset(srs[0].id)
    assert sr.StudyInstanceUID == study_uid and sr.PatientID == "DXRE2E5"
    assert str(sr.PatientName) == "Dreiansicht^Hand"
    report = hd.sr.MeasurementReport.from_sequence([sr])
    pa_uid, oblique_uid, lateral_uid = (files[v].stem for v in ("PA", "oblique", "lateral"))

    # The node's worker must report what the engine gives for the same pixels in this process.
    expected = measurable_pa[3]
    side = {"L": "left", "R": "right"}[measurable_pa[1]]
    measured = [name for name in ("II", "III", "IV") if expected.bones[name].status == "ok"]
    planar = report.get_planar_roi_measurement_groups()
    bone_groups = [g for g in planar if g.tracking_identifier.startswith("Metacarpal")]
    assert [g.tracking_identifier for g in bone_groups] == [f"Metacarpal {n}, {side} hand" for n in measured]
    for group, name in zip(bone_groups, measured):
        (image,) = group.roi.ContentSequence
        assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == pa_uid
        thickness_mm = group.get_measurements(name=codes.CORTICAL_THICKNESS)[0].value
        assert thickness_mm == pytest.approx(expected.bones[name].cortical_thickness_mm, abs=1e-3), name

    groups = report.get_image_measurement_groups()
    (combined,) = [g for g in planar if g.tracking_identifier.startswith("DXR-BMD")]
    assert combined.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == pa_uid
    bmd_g_cm2 = combined.get_measurements(name=codes.DXR_BMD)[0].value
    assert bmd_g_cm2 == pytest.approx(expected.dxr_bmd_g_cm2, abs=1e-4)
    unused = {g.source_images[0].referenced_sop_instance_uid: g.get_qualitative_evaluations(name=codes.IMAGE_USE)[0].value
              for g in groups if g.tracking_identifier.startswith("Image not used")}
    assert set(unused) == {oblique_uid, lateral_uid}
    # Each unused view carries the reason the engine gives for its pixels here, a non-PA view.
    assert unused == {files[v].stem: codes.REASON_CODES[_non_pa_reason(files[v])] for v in ("oblique", "lateral")}, unused

    sc = orthanc.instance_dataset(scs[0].id)
    assert sc.StudyInstanceUID == study_uid and sc.Laterality == measurable_pa[1]
    assert sc.PhotometricInterpretation == "RGB" and min(sc.Rows, sc.Columns) >= 1024
    # Orthanc accepted the JPEG-LS lossless picture as it was sent (compressed), as a composed page.
    assert sc.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80", sc.file_meta.TransferSyntaxUID
    assert sc.ConversionType == "WSD" and sc.SourceImageSequence[0].ReferencedSOPInstanceUID == pa_uid




def test_study_without_a_measurable_pa_yields_one_refusal_sr(
        orthanc: OrthancServer, routed_node: NodeProcess, tmp_path: Path) -> None:
    study_uid, series_uid = generate_uid(), generate_uid()
    files = {}
    for number, view in enumerate(("oblique", "lateral"), start=1):
        ds = _phantom(view, study_uid=study_uid, series_uid=series_uid, patient_id="DXRE2E5R")
        files[view] = dicom_samples.save(_tidy(ds, number, view), tmp_path / f"{ds.SOPInstanceUID}.dcm")
    result = storescu(list(files.values()), orthanc.dicom_port, called=orthanc.aet)
    assert store_statuses(result) == ["Success"] * 2, result

    (sr_instance,) = orthanc.wait_for_instances(study_uid, lambda i: i.sop_class_uid == SR_CLASS,
                                                timeout_seconds=120)
    assert [j["state"] for j in routed_node.jobs(study_uid)] == ["done"]
    instances = orthanc.instances(study_uid)
    assert sorted(i.sop_class_uid for i in instances if i.remote_aet == routed_node.ae_title) == [SR_CLASS]
    report = hd.sr.MeasurementReport.from_sequence([orthanc.instance_dataset(sr_instance.id)])
    assert report.get_planar_roi_measurement_groups() == []
    groups = report.get_image_measurement_groups()
    outcome = {g.source_images[0].referenced_sop_instance_uid:
               (g.get_qualitative_evaluations(name=codes.ANALYSIS_OUTCOME)[0].value,
                g.get_qualitative_evaluations(name=codes.REFUSAL_REASON)[0].value) for g in groups}
    assert outcome == {
        files[v].stem: (codes.NOT_MEASURED, codes.REASON_CODES[_non_pa_reason(files[v])]) for v in ("oblique", "lateral")
    }, outcome
