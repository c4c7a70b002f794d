"""The TID 1500 SR: content read back with highdicom, identity, UIDs, study planning."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from node.report import codes
from node.report import OutputOptions, build_study_outputs, write_dicom_outputs
from tests.node.outputs_inputs import (SCORES_OMITTED, hand_dataset, result_from_truth, save, view_refusal,
                                       walk_content)

REPO = Path(__file__).resolve().parents[2]
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
SR_ONLY = OutputOptions(picture=False)


def _read_back(ds: pydicom.Dataset, tmp_path: Path, name: str = "sr.dcm"):
    """Write the SR as a file and read it with highdicom: what PACS would get."""
    path = save(ds, tmp_path / name)
    sr = hd.sr.srread(path)
    return sr, hd.sr.MeasurementReport.from_sequence([sr])


def _value(group, code) -> float:
    (measurement,) = group.get_measurements(name=code)
    return measurement.value


def _evaluation(group, code):
    (evaluation,) = group.get_qualitative_evaluations(name=code)
    return evaluation.value


def _roi_source(group) -> str:
    """SOP Instance UID of the image the group's SCOORD is drawn on."""
    (image,) = group.roi.ContentSequence
    return image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID


def _comments(group) -> list[str]:
    return [item.TextValue for item in group[0].ContentSequence
            if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "121106"]


@pytest.fixture(scope="module")
def left_pa():
    ds, truth = hand_dataset(laterality="L")
    return ds, result_from_truth(truth, laterality="L")


def test_sr_measurements_equal_the_result(left_pa, tmp_path):
    ds, result = left_pa
    (sr_ds,) = build_study_outputs([(ds, result)], uid_seed="study/1", options=SR_ONLY)
    _, report = _read_back(sr_ds, tmp_path)

    bone_groups = report.get_planar_roi_measurement_groups()[:3]
    assert [g.tracking_identifier for g in bone_groups] == [
        "Metacarpal II, left hand", "Metacarpal III, left hand", "Metacarpal IV, left hand"]
    for group, name in zip(bone_groups, ("II", "III", "IV")):
        bone = result.bones[name]
        assert _value(group, codes.CORTICAL_THICKNESS) == round(bone.cortical_thickness_mm, 3)
        assert _value(group, codes.OUTER_WIDTH) == round(bone.outer_width_mm, 3)
        assert _value(group, codes.METACARPAL_INDEX) == round(bone.mci, 4)
        assert _value(group, codes.VPA) == round(bone.vpa_mm, 3)
        units = {m.name.meaning: m.unit.value for m in group.get_measurements()}
        assert units == {"Metacarpal cortical thickness": "mm", "Width": "mm",
                         "Metacarpal index": "{ratio}", "Volume per area": "mm"}
        bone_site, site = group.finding_sites
        assert bone_site.value == codes.BONE_MODIFIERS[name]  # first: the bone itself (OHIF prints this one)
        assert bone_site.laterality == pydicom.sr.codedict.codes.SCT.Left
        assert (site.value.value, site.value.scheme_designator) == ("36455000", "SCT")
        assert site.laterality == pydicom.sr.codedict.codes.SCT.Left
        assert site.topographical_modifier == codes.BONE_MODIFIERS[name]
        # ROI: result (column, row) pixel centres -> SCOORD with (0, 0) at the pixel corner.
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        expected = np.asarray(bone.roi_polygon_px) + 0.5
        np.testing.assert_allclose(region.value[:-1], expected, atol=1e-3)
        np.testing.assert_allclose(region.value[-1], region.value[0])  # closed
        assert _roi_source(group) == ds.SOPInstanceUID
        assert group.tracking_uid is not None

    sites = {str(g.finding_sites[1].topographical_modifier.value) for g in bone_groups}
    assert len(sites) == 3 == len({g.finding_sites[0].value.value for g in bone_groups})  # three distinct coded bones

    (combined,) = [g for g in report.get_planar_roi_measurement_groups() if g.tracking_identifier.startswith("DXR")]
    assert combined.tracking_identifier == "DXR-BMD, left hand"
    # The combined group is drawn on the radiograph too (OHIF needs a SCOORD): the ROIs' outline.
    assert _roi_source(combined) == ds.SOPInstanceUID
    hull = combined.roi.value
    for name in ("II", "III", "IV"):
        pts = np.asarray(result.bones[name].roi_polygon_px) + 0.5
        assert hull[:, 0].min() <= pts[:, 0].min() + 1e-6 and hull[:, 0].max() >= pts[:, 0].max() - 1e-6
    # The first five numbers are the ones a reader needs (OHIF shows five).
    first = [m.name.meaning for m in combined.get_measurements()][:5]
    assert first == ["DXR-BMD", "T-score", "Z-score", "Bone health index", "Mean metacarpal index"]
    assert _value(combined, codes.DXR_BMD) == round(result.dxr_bmd_g_cm2, 4)
    assert _value(combined, codes.T_SCORE) == round(result.t_score, 2)
    assert _value(combined, codes.Z_SCORE) == round(result.z_score, 2)
    assert _value(combined, codes.BHI) == round(result.bhi, 3)
    assert not hasattr(codes, "POROSITY")  # not measured: never reported (docs/method.md §4)
    (z_score,) = combined.get_measurements(name=pydicom.sr.codedict.codes.DCM.ZScore)
    assert z_score.unit.value == "{Z-score}"
    (bmd,) = combined.get_measurements(name=codes.DXR_BMD)
    assert bmd.unit.value == "g/cm2"
    assert _evaluation(combined, codes.SCREENING_CATEGORY) == codes.SCREENING_VALUES[result.who_category]
    assert _evaluation(combined, codes.REFERENCE_STATUS) == codes.PROVISIONAL_REFERENCE
    # No SNOMED disorder code anywhere (the category is a DXR screening category, not a diagnosis).
    coded = [c for item in walk_content(sr_ds) for c in item.get("ConceptCodeSequence", [])]
    assert not [c for c in coded if c.CodingSchemeDesignator == "SCT" and c.CodeValue in ("64859006", "312894000")]
    assert _evaluation(combined, codes.SERVICE_EXTENT) == codes.FULL_SERVICE
    assert _evaluation(combined, codes.PIXEL_SPACING_SOURCE) == codes.PIXEL_SPACING_SOURCES["PixelSpacing"]
    # TID 311 on DXR-BMD: the reference population's mean and SD in g/cm2, and its name.
    population = [item for item in combined[0].ContentSequence if item.ValueType == "NUM"
                  and item.name == codes.DXR_BMD][0].ContentSequence
    numbers = {i.ConceptNameCodeSequence[0].CodeValue: (i.MeasuredValueSequence[0].NumericValue,
                                                         i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue)
               for i in population if i.ValueType == "NUM"}
    assert numbers == {"373098007": (0.598, "g/cm2"), "386136009": (0.034, "g/cm2")}
    assert any(result.reference_name in i.TextValue for i in population if i.ValueType == "TEXT")
    for code in (codes.T_SCORE, pydicom.sr.codedict.codes.DCM.ZScore):
        (score,) = [item for item in combined[0].ContentSequence if item.ValueType == "NUM" and item.name == code]
        assert "ContentSequence" not in score  # no mean 0 / SD 1 on the scores


def test_sr_identity_procedure_observer_library(left_pa, tmp_path):
    ds, result = left_pa
    options = OutputOptions(manufacturer="Test Maker", device_name="DXR Test Node", software_version="9.8.7",
                            institution_name="Test Hospital")
    sr_ds, _ = build_study_outputs([(ds, result)], uid_seed="study/1", options=options)
    sr, report = _read_back(sr_ds, tmp_path)

    assert sr.SOPClassUID == SR_CLASS and sr.Modality == "SR"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                    "AccessionNumber", "StudyDate"):
        assert sr[keyword].value == ds[keyword].value, keyword
    assert sr.SeriesInstanceUID not in (ds.SeriesInstanceUID,)
    assert sr.Manufacturer == "Test Maker" and sr.SoftwareVersions == "9.8.7"
    assert sr.InstitutionName == "Test Hospital"

    root = sr.ContentSequence
    procedures = [i.ConceptCodeSequence[0] for i in root if i.ConceptNameCodeSequence[0].CodeValue == "121058"]
    assert [(p.CodeValue, p.CodingSchemeDesignator) for p in procedures] == [("0749T", "C4")]
    (device,) = report.get_observer_contexts(observer_type=pydicom.sr.codedict.codes.DCM.Device)
    attributes = device.observer_identifying_attributes
    assert attributes.name == "DXR Test Node"
    assert attributes.manufacturer_name == "Test Maker"
    assert "9.8.7" in attributes.model_name

    (library,) = [i for i in root if i.ConceptNameCodeSequence[0].CodeValue == "111028"]
    referenced = [img.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                  for group in library.ContentSequence for img in group.ContentSequence if img.ValueType == "IMAGE"]
    assert referenced == [ds.SOPInstanceUID]

    schemes = {item.CodingSchemeDesignator: item for item in sr.CodingSchemeIdentificationSequence}
    assert codes.PRIVATE_SCHEME in schemes
    assert schemes[codes.PRIVATE_SCHEME].CodingSchemeName


def test_uids_are_derived_from_the_seed(left_pa):
    ds, result = left_pa
    first = build_study_outputs([(ds, result)], uid_seed="study/run-1")
    again = build_study_outputs([(ds, result)], uid_seed="study/run-1")
    other = build_study_outputs([(ds, result)], uid_seed="study/run-2")
    assert [o.SOPInstanceUID for o in first] == [o.SOPInstanceUID for o in again]
    assert not {o.SOPInstanceUID for o in first} & {o.SOPInstanceUID for o in other}
    assert [o.SOPClassUID for o in first] == [SR_CLASS, SC_CLASS]
    sr, sc = first
    assert len({sr.SeriesInstanceUID, sc.SeriesInstanceUID, ds.SeriesInstanceUID}) == 3
    assert sr.StudyInstanceUID == sc.StudyInstanceUID == ds.StudyInstanceUID


def test_replaced_srs_are_named_as_predecessors(left_pa):
    ds, result = left_pa
    old = build_study_outputs([(ds, result)], uid_seed="study/run-1", options=SR_ONLY)
    new_sr = build_study_outputs([(ds, result)], uid_seed="study/run-2", replaces=[old[0].SOPInstanceUID],
                                 options=SR_ONLY)[0]
    (study,) = new_sr.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == ds.StudyInstanceUID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == old[0].SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence] == [old[0].SOPInstanceUID]
    assert "PredecessorDocumentsSequence" not in old[0]


def test_reduced_service_is_stated(tmp_path):
    ds, truth = hand_dataset(laterality="R", seed=1)
    result = result_from_truth(truth, laterality="R", refuse_bone="IV")
    assert result.reduced_service
    (sr_ds,) = build_study_outputs([(ds, result)], uid_seed="study/reduced", options=SR_ONLY)
    _, report = _read_back(sr_ds, tmp_path)
    assert [g.tracking_identifier for g in report.get_planar_roi_measurement_groups()] == [
        "Metacarpal II, right hand", "Metacarpal III, right hand", "DXR-BMD, right hand"]
    groups = {g.tracking_identifier: g for g in
              report.get_image_measurement_groups() + report.get_planar_roi_measurement_groups()}
    combined = groups["DXR-BMD, right hand"]
    assert _evaluation(combined, codes.SERVICE_EXTENT) == codes.REDUCED_SERVICE
    assert any("Reduced service" in text for text in _comments(combined))
    not_measured = groups["Metacarpal IV, right hand"]
    assert _evaluation(not_measured, codes.ANALYSIS_OUTCOME) == codes.NOT_MEASURED
    assert _evaluation(not_measured, codes.REFUSAL_REASON) == codes.REASON_CODES["foreign_object_in_roi"]
    assert any("Metal lies over" in text for text in _comments(not_measured))


def test_scores_omitted_reason_is_stated(tmp_path):
    ds, truth = hand_dataset(laterality="L")
    result = result_from_truth(truth, with_scores=False)
    (sr_ds,) = build_study_outputs([(ds, result)], uid_seed="study/noscores", options=SR_ONLY)
    _, report = _read_back(sr_ds, tmp_path)
    (combined,) = [g for g in report.get_planar_roi_measurement_groups() if g.tracking_identifier.startswith("DXR-BMD")]
    assert combined.get_measurements(name=codes.T_SCORE) == []
    assert _value(combined, codes.DXR_BMD) == round(result.dxr_bmd_g_cm2, 4)
    assert any(SCORES_OMITTED in text for text in _comments(combined))


@pytest.mark.parametrize("charset, name", [("ISO_IR 100", "Müller^Jürgen"), ("ISO_IR 192", "Đặng^Thị Ngọc Ánh")])
def test_patient_name_round_trips(charset, name, tmp_path):
    ds, truth = hand_dataset(charset=charset, patient_name=name)
    ds = pydicom.dcmread(save(ds, tmp_path / "source.dcm"))  # as received: encoded bytes
    for k, output in enumerate(build_study_outputs([(ds, result_from_truth(truth))], uid_seed="study/cs")):
        back = pydicom.dcmread(save(output, tmp_path / f"out{k}.dcm"))
        assert back.SpecificCharacterSet == charset
        assert str(back.PatientName) == name


def test_refused_study_yields_one_refusal_sr(tmp_path):
    study = generate_uid()
    lateral, _ = hand_dataset(view="lateral", study_uid=study)
    oblique, _ = hand_dataset(view="oblique", study_uid=study, instance_number=2)
    images = [(lateral, view_refusal("lateral")), (oblique, view_refusal("oblique"))]
    (sr_ds,) = build_study_outputs(images, uid_seed="study/refused")
    assert sr_ds.SOPClassUID == SR_CLASS
    _, report = _read_back(sr_ds, tmp_path)
    groups = report.get_image_measurement_groups()
    assert len(groups) == 2
    reasons = {g.source_images[0].referenced_sop_instance_uid: _evaluation(g, codes.REFUSAL_REASON)
               for g in groups}
    assert reasons == {lateral.SOPInstanceUID: codes.REASON_CODES["lateral_view"],
                       oblique.SOPInstanceUID: codes.REASON_CODES["oblique_view"]}
    assert all(_evaluation(g, codes.ANALYSIS_OUTCOME) == codes.NOT_MEASURED for g in groups)
    assert any("lateral view" in text for g in groups for text in _comments(g))
    # What was not done, and nothing a billing system reads as a performed 0749T.
    procedures = [i.ConceptCodeSequence[0] for i in sr_ds.ContentSequence
                  if i.ConceptNameCodeSequence[0].CodeValue == "121058"]
    assert [(p.CodeValue, p.CodingSchemeDesignator) for p in procedures] == [("DXR0090", codes.PRIVATE_SCHEME)]
    assert "PerformedProcedureCodeSequence" not in sr_ds or not sr_ds.PerformedProcedureCodeSequence
    assert "0749T" not in str(sr_ds)
    assert build_study_outputs(images, uid_seed="study/refused", options=OutputOptions(refusal_sr="none")) == []
    assert build_study_outputs(images, uid_seed="study/refused", options=OutputOptions(refusal_sr=False)) == []


def test_a_study_that_shows_no_hand_gets_no_refusal_sr_by_default(caplog):
    from analysis.result import refused

    caplog.set_level("INFO")
    chest, _ = hand_dataset(study_uid=generate_uid())
    if "BodyPartExamined" in chest:
        del chest.BodyPartExamined
    images = [(chest, refused("not_pa_hand", laterality=None))]
    assert build_study_outputs(images, uid_seed="study/chest") == []
    assert any("event=refusal_sr_skipped" in r.getMessage() for r in caplog.records)
    (sr,) = build_study_outputs(images, uid_seed="study/chest", options=OutputOptions(refusal_sr="all"))
    assert sr.Modality == "SR"
    chest.BodyPartExamined = "HAND"  # the header says hand: the technologist should learn why
    assert len(build_study_outputs(images, uid_seed="study/chest")) == 1


def test_pa_oblique_lateral_study_reports_once_from_the_pa(tmp_path):
    study = generate_uid()
    pa, truth = hand_dataset(study_uid=study)
    oblique, _ = hand_dataset(view="oblique", study_uid=study, instance_number=2)
    lateral, _ = hand_dataset(view="lateral", study_uid=study, instance_number=3)
    images = [(oblique, view_refusal("oblique")), (pa, result_from_truth(truth)), (lateral, view_refusal("lateral"))]
    outs = build_study_outputs(images, uid_seed="study/three")
    assert [o.SOPClassUID for o in outs] == [SR_CLASS, SC_CLASS]
    _, report = _read_back(outs[0], tmp_path)
    for group in report.get_planar_roi_measurement_groups():
        assert _roi_source(group) == pa.SOPInstanceUID
    unused = {g.source_images[0].referenced_sop_instance_uid: _evaluation(g, codes.IMAGE_USE)
              for g in report.get_image_measurement_groups() if g.tracking_identifier.startswith("Image not used")}
    assert unused == {oblique.SOPInstanceUID: codes.REASON_CODES["oblique_view"],
                      lateral.SOPInstanceUID: codes.REASON_CODES["lateral_view"]}


def test_both_hands_and_the_best_pa_of_each(tmp_path):
    study = generate_uid()
    left, left_truth = hand_dataset(laterality="L", study_uid=study)
    left_again, _ = hand_dataset(laterality="L", study_uid=study, instance_number=2)
    right, right_truth = hand_dataset(laterality="R", study_uid=study, instance_number=3, seed=1)
    images = [
        (left_again, result_from_truth(left_truth, refuse_bone="II")),  # two bones: worse
        (right, result_from_truth(right_truth, laterality="R")),
        (left, result_from_truth(left_truth)),
    ]
    outs = build_study_outputs(images, uid_seed="study/both")
    assert [(o.SOPClassUID, o.get("Laterality")) for o in outs] == [
        (SR_CLASS, None), (SC_CLASS, "L"), (SR_CLASS, None), (SC_CLASS, "R")]
    _, left_report = _read_back(outs[0], tmp_path, "left.dcm")
    (group,) = left_report.get_planar_roi_measurement_groups()[:1]
    assert _roi_source(group) == left.SOPInstanceUID
    unused = {g.source_images[0].referenced_sop_instance_uid: _evaluation(g, codes.IMAGE_USE)
              for g in left_report.get_image_measurement_groups()
              if g.tracking_identifier.startswith("Image not used")}
    assert unused == {left_again.SOPInstanceUID: codes.NOT_BEST_IMAGE, right.SOPInstanceUID: codes.OTHER_HAND}


def test_mixed_studies_are_rejected(left_pa):
    ds, result = left_pa
    other, truth = hand_dataset(study_uid=generate_uid())
    with pytest.raises(ValueError, match="one study"):
        build_study_outputs([(ds, result), (other, result_from_truth(truth))], uid_seed="x")
    with pytest.raises(ValueError):
        build_study_outputs([], uid_seed="x")


def test_write_dicom_outputs_names_files_by_sop_instance_uid(left_pa, tmp_path):
    ds, result = left_pa
    paths = write_dicom_outputs(ds, result, tmp_path / "out")
    assert len(paths) == 2
    for path in paths:
        back = pydicom.dcmread(path)
        assert path.name == f"{back.SOPInstanceUID}.dcm"
    assert write_dicom_outputs(ds, result, tmp_path / "out") == paths  # same input, same files


def test_docs_list_every_private_code():
    text = (REPO / "docs" / "codes.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\|\s*`?(DXR\d{4})`?\s*\|\s*([^|]+?)\s*\|", text, flags=re.MULTILINE))
    for code in codes.private_codes():
        assert listed.get(code.value) == code.meaning, code.value
    assert codes.PRIVATE_SCHEME in text


@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192"])
def test_own_text_fits_the_copied_character_set(charset, tmp_path):
    ds, truth = hand_dataset(charset=charset, patient_name="Smith^Anna")
    reference = "Kälvesten et al., Örebro women \u2014 Sweden (peak \u2265 40 y)"
    result = result_from_truth(truth).replace(reference_name=reference)
    options = OutputOptions(institution_name="Universitätsklinikum Jena")
    for k, output in enumerate(build_study_outputs([(ds, result)], uid_seed="study/cs", options=options)):
        back = pydicom.dcmread(save(output, tmp_path / f"out{k}.dcm"))
        assert back.get("SpecificCharacterSet") == charset
        texts = [back.InstitutionName] + [
            item.TextValue for item in walk_content(back) if item.get("ValueType") == "TEXT"]
        joined = " ".join(texts)
        expected = {  # what the report can say in each set
            "ISO_IR 192": (reference, "Universitätsklinikum Jena"),
            "ISO_IR 100": ("Kälvesten et al., Örebro women - Sweden (peak >= 40 y)", "Universitätsklinikum Jena"),
            None: ("Kalvesten et al., Orebro women - Sweden (peak >= 40 y)", "Universitatsklinikum Jena"),
        }[charset]
        assert back.InstitutionName == expected[1]
        if back.Modality == "SR":
            assert expected[0] in joined
        if charset is None:
            assert joined.isascii()


def test_a_measured_bone_without_a_region_keeps_its_numbers(tmp_path):
    ds, truth = hand_dataset()
    result = result_from_truth(truth)
    result.bones["III"].roi_polygon_px = []
    (sr_ds,) = build_study_outputs([(ds, result)], uid_seed="study/noroi", options=SR_ONLY)
    _, report = _read_back(sr_ds, tmp_path)
    # Still a region on the radiograph (OHIF needs one): the whole image.
    (group,) = [g for g in report.get_planar_roi_measurement_groups() if g.tracking_identifier.startswith("Metacarpal III")]
    region = group.roi.value
    assert region[:, 0].min() == 0.0 and region[:, 0].max() == ds.Columns and region[:, 1].max() == ds.Rows
    assert _value(group, codes.CORTICAL_THICKNESS) == round(result.bones["III"].cortical_thickness_mm, 3)
    assert _evaluation(group, codes.ANALYSIS_OUTCOME) == codes.MEASURED


def test_a_picture_that_cannot_be_drawn_does_not_lose_the_sr(caplog):
    ds, truth = hand_dataset()
    ds = copy.deepcopy(ds)
    ds.PixelData = ds.PixelData[:100]  # truncated: no picture can be made from it
    outs = build_study_outputs([(ds, result_from_truth(truth))], uid_seed="study/nopicture")
    assert [o.SOPClassUID for o in outs] == [SR_CLASS]
    assert any("event=picture_failed" in r.getMessage() for r in caplog.records)


def test_regions_reaching_outside_the_image_are_clipped_to_it(tmp_path):
    ds, truth = hand_dataset()
    result = result_from_truth(truth)
    result.bones["II"].roi_polygon_px[0] = (-20.0, ds.Rows + 40.0)
    (sr_ds,) = build_study_outputs([(ds, result)], uid_seed="study/clip", options=SR_ONLY)
    _, report = _read_back(sr_ds, tmp_path)
    region = report.get_planar_roi_measurement_groups()[0].roi.value
    assert region[:, 0].min() == 0.0 and region[:, 1].max() == ds.Rows
    np.testing.assert_allclose(region[1:-1], np.asarray(result.bones["II"].roi_polygon_px[1:]) + 0.5, atol=1e-3)


def test_non_image_instances_of_the_study_are_left_out(left_pa, caplog):
    from tests.dicom_samples import make_sr_dataset

    ds, result = left_pa
    foreign = make_sr_dataset(ds.StudyInstanceUID)
    unreadable = view_refusal("lateral").replace(status="error", reason="unreadable")
    outs = build_study_outputs([(ds, result), (foreign, unreadable)], uid_seed="study/foreign", options=SR_ONLY)
    (sr,) = outs
    evidence = {ref.ReferencedSOPInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    assert evidence == {ds.SOPInstanceUID}
    assert build_study_outputs([(foreign, unreadable)], uid_seed="study/foreign-only") == []
    assert any("event=outputs_non_image_skipped" in r.getMessage() for r in caplog.records)


def test_every_refusal_reason_of_the_engine_has_its_own_code():
    from analysis.result import REASON_MESSAGES

    assert set(REASON_MESSAGES) <= set(codes.REASON_CODES), set(REASON_MESSAGES) - set(codes.REASON_CODES)
    assert len({code.value for code in codes.REASON_CODES.values()}) == len(codes.REASON_CODES)
