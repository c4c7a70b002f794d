"""The Secondary Capture result picture: DICOM attributes and what the picture shows."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from node.report import overlay, panels, picture, style
from node.report import OutputOptions, build_study_outputs
from tests.node.outputs_inputs import SCORES_OMITTED, hand_dataset, result_from_truth, save

SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def _sc(ds, result, **options) -> pydicom.Dataset:
    outputs = build_study_outputs([(ds, result)], uid_seed="sc-test", options=OutputOptions(**options))
    (sc,) = [o for o in outputs if o.SOPClassUID == SC_CLASS]
    return sc


@pytest.fixture(scope="module")
def right_hand():
    ds, truth = hand_dataset(laterality="R", charset="ISO_IR 192", patient_name="Đặng^Thị")
    return ds, truth, result_from_truth(truth, laterality="R")


def test_sc_is_an_rgb_picture_in_the_source_study(right_hand, tmp_path):
    ds, _, result = right_hand
    outputs = build_study_outputs([(ds, result)], uid_seed="sc-test")
    sr, sc = outputs
    sc = pydicom.dcmread(save(sc, tmp_path / "sc.dcm"))
    assert sc.SOPClassUID == SC_CLASS and sc.Modality == "OT"
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "AccessionNumber", "StudyDate"):
        assert sc[keyword].value == ds[keyword].value, keyword
    assert sc.SpecificCharacterSet == "ISO_IR 192"
    assert len({sc.SeriesInstanceUID, sr.SeriesInstanceUID, ds.SeriesInstanceUID}) == 3
    assert sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3 and sc.BitsAllocated == 8
    assert min(sc.Rows, sc.Columns) >= 1024
    assert sc.Laterality == "R"
    assert sc.BurnedInAnnotation == "YES"
    assert "not a DXA measurement" in sc.ImageComments
    assert sc.pixel_array.shape == (sc.Rows, sc.Columns, 3)


def test_unknown_side_has_no_laterality():
    ds, truth = hand_dataset(laterality=None)
    sc = _sc(ds, result_from_truth(truth, laterality=None))
    assert not sc.get("Laterality")


def _hand_box(sc) -> np.ndarray:
    left, top, right, bottom = picture.HAND_BOX_PX
    return sc.pixel_array[top:bottom, left:right].astype(np.float64)


def test_the_radiograph_is_shown_bone_bright_for_both_photometrics():
    images = {}
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        ds, truth = hand_dataset(photometric=photometric)
        images[photometric] = _hand_box(_sc(ds, result_from_truth(truth)))
    grey = images["MONOCHROME2"].mean(axis=-1)
    assert grey.std() > 20  # a picture, not a blank panel
    # MONOCHROME1 stores the same hand inverted: after conversion the pictures agree.
    assert np.abs(images["MONOCHROME1"] - images["MONOCHROME2"]).mean() < 3
    inverted = 255 - images["MONOCHROME2"]
    assert np.abs(images["MONOCHROME1"] - inverted).mean() > 30


def test_rois_are_drawn_in_colour_on_the_grey_radiograph(right_hand):
    ds, _, result = right_hand
    box = _hand_box(_sc(ds, result))
    saturation = box.max(axis=-1) - box.min(axis=-1)
    assert (saturation > 80).sum() > 500  # ROI outlines, edges, labels


def test_table_rows_carry_each_bone_and_say_why_one_is_missing():
    ds, truth = hand_dataset()
    result = result_from_truth(truth, refuse_bone="IV")
    rows = picture.table_rows(result)
    assert [r[0] for r in rows] == ["MC II", "MC III", "MC IV"]
    for row, name in zip(rows[:2], ("II", "III")):
        bone = result.bones[name]
        assert row[1:5] == (f"{bone.cortical_thickness_mm:.2f}", f"{bone.outer_width_mm:.2f}",
                            f"{bone.mci:.3f}", f"{bone.vpa_mm:.2f}")
    assert rows[2][1].startswith("not measured: Metal lies over")


def test_summary_says_why_scores_are_omitted():
    ds, truth = hand_dataset()
    lines = picture.summary_lines(result_from_truth(truth, with_scores=False))
    assert SCORES_OMITTED in lines
    lines = picture.summary_lines(result_from_truth(truth, refuse_bone="II"))
    assert any(line.startswith("Reduced service: 2 of 3") for line in lines)
    assert any(line.startswith("T-score") for line in lines)


REFERENCE_CSV = """sex,age_min,age_max,mean_g_cm2,sd_g_cm2,kind,source,derived
F,30,46,0.598,0.034,young_adult,"test young-adult women",false
F,20,50,0.598,0.034,age_matched,"test women 20-49",true
F,50,90,0.52,0.05,age_matched,"test women 50-89",true
M,20,90,0.67,0.04,age_matched,"test men",true
"""


def _reference():
    from analysis.reference import load_reference_tables

    return load_reference_tables([REFERENCE_CSV])


def _colour_count(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(image == np.asarray(colour, dtype=image.dtype), axis=-1).sum())


def test_chart_draws_the_reference_band_and_the_patient():
    ds, truth = hand_dataset()
    result = result_from_truth(truth)
    with_reference = _sc(ds, result, reference=_reference()).pixel_array
    without = _sc(ds, result).pixel_array
    assert _colour_count(with_reference, style.BAND_1SD) > 5000
    assert _colour_count(with_reference, style.BAND_25SD) > 2000
    assert _colour_count(without, style.BAND_1SD) == 0
    # the patient's point: the only accent colour in the right column above the footer
    right_column = with_reference[: picture.PAGE_SIZE_PX[1] - 80, picture.HAND_BOX_PX[2]:]
    assert _colour_count(right_column, style.ACCENT) > 200


@pytest.mark.parametrize("rotation_deg", [0.0, 25.0])
def test_roi_tile_shows_the_shaft_upright_with_its_edges(rotation_deg):
    ds, truth = hand_dataset(rotation_deg=rotation_deg)
    result = result_from_truth(truth)
    image = panels.bone_bright_image(ds)
    bone = result.bones["III"]
    tile = np.asarray(panels.roi_tile(image, bone, pixel_spacing_mm=truth.spacing_mm, tile_px=(280, 300)))
    outer, inner = overlay.OUTER_EDGE_COLOUR, overlay.INNER_EDGE_COLOUR
    for colour in (outer, inner, style.ACCENT):
        assert _colour_count(tile, colour) > 100, colour

    def outer_edge_columns(band: np.ndarray) -> tuple[float, float]:
        columns = np.nonzero(np.all(band == np.asarray(outer, dtype=band.dtype), axis=-1))[1]
        middle = tile.shape[1] / 2
        return columns[columns < middle].mean(), columns[columns > middle].mean()

    # Upright: the two outer edges run down the tile at the same columns at its top and bottom.
    top = outer_edge_columns(tile[60:110])
    bottom = outer_edge_columns(tile[190:240])
    assert abs(top[0] - bottom[0]) < 3 and abs(top[1] - bottom[1]) < 3, (top, bottom)
    # and their distance is the outer width at the tile's scale, on both sides of the centre
    assert top[1] - top[0] > 0.3 * tile.shape[1]


def test_source_orientation_is_kept_even_when_highdicom_would_refuse_it():
    ds, truth = hand_dataset(modality="DX")
    ds.PatientOrientation = ["AR", "FL"]  # oblique-looking combined values are valid DICOM
    assert list(_sc(ds, result_from_truth(truth)).PatientOrientation) == ["AR", "FL"]


def test_hand_panel_is_cropped_to_the_hand_and_geometry_follows():
    ds, truth = hand_dataset()
    result = result_from_truth(truth)
    rows, cols = truth.shape
    # No outline: the box grows from the metacarpal axes; a hand in a big field is cropped.
    big = (rows * 2, cols * 2)
    c0, r0, c1, r1 = panels._hand_crop_box(result, big)
    assert (c1 - c0) * (r1 - r0) < 0.8 * big[0] * big[1]
    for bone in result.bones.values():
        for c, r in bone.roi_polygon_px:
            assert c0 <= c <= c1 and r0 <= r <= r1
    moved = panels._shifted(result, c0, r0)
    np.testing.assert_allclose(np.asarray(moved.bones["III"].roi_polygon_px) + (c0, r0),
                               np.asarray(result.bones["III"].roi_polygon_px))
    # Nothing located: the whole image.
    assert panels._hand_crop_box(result.replace(bones={}, metacarpal_axes_px={}), big) == (0, 0, big[1], big[0])


def test_sc_is_a_composed_page_derived_from_the_radiograph(right_hand, tmp_path):
    ds, _, result = right_hand
    sc = pydicom.dcmread(save(_sc(ds, result), tmp_path / "sc.dcm"))
    assert sc.ConversionType == "WSD"
    assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    (source,) = sc.SourceImageSequence
    assert (source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID) == (ds.SOPClassUID, ds.SOPInstanceUID)
    assert "radiograph" in sc.DerivationDescription
    # JPEG-LS lossless, decodable, and far smaller than the 6.9 MB uncompressed page.
    assert sc.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
    assert len(sc.PixelData) < 2_500_000
    assert sc.pixel_array.shape == (sc.Rows, sc.Columns, 3)


def test_each_hand_has_its_own_sc_series_and_instance_numbers_do_not_repeat_across_runs():
    from pydicom.uid import generate_uid

    study = generate_uid()
    left, left_truth = hand_dataset(laterality="L", study_uid=study)
    right, right_truth = hand_dataset(laterality="R", study_uid=study, instance_number=2, seed=1)
    images = [(left, result_from_truth(left_truth)), (right, result_from_truth(right_truth, laterality="R"))]
    seen: dict[str, set] = {}
    numbers: dict[str, list[int]] = {}
    for run in (1, 2, 3):
        for out in build_study_outputs(images, uid_seed=f"{study}/{run}", run=run):
            seen.setdefault(out.SeriesInstanceUID, set()).add(out.get("Laterality"))
            numbers.setdefault(out.SeriesInstanceUID, []).append(int(out.InstanceNumber))
    sc_series = [uid for uid, lats in seen.items() if lats & {"L", "R"}]
    assert len(sc_series) == 2 and all(len(seen[uid]) == 1 for uid in sc_series)
    for uid, values in numbers.items():
        assert len(values) == len(set(values)), (uid, values)


def test_a_peer_without_jpeg_ls_gets_the_picture_uncompressed(right_hand, tmp_path):
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import SecondaryCaptureImageStorage

    from node.config import DestinationConfig
    from node.export.scu import send_files

    ds, _, result = right_hand
    path = save(_sc(ds, result), tmp_path / "sc.dcm")
    received = []

    def on_store(event):
        received.append((str(event.context.transfer_syntax), event.dataset.SOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="NOJPEGLS")
    ae.add_supported_context(SecondaryCaptureImageStorage, [pydicom.uid.ExplicitVRLittleEndian,
                                                            pydicom.uid.ImplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        port = server.server_address[1]
        dest = DestinationConfig(name="p", ae_title="NOJPEGLS", host="127.0.0.1", port=port)
        (res,) = send_files(dest, [path], "DXRNODE")
    finally:
        server.shutdown()
    assert res.ok, res
    sent = pydicom.dcmread(path, stop_before_pixels=True)
    assert received and received[0][0] in (pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian)
    assert received[0][1] == sent.SOPInstanceUID
