"""``dxr-node analyze``: JSON Lines contract, inputs, exit codes, outputs."""

import json

import numpy as np
import pydicom
import pytest
from PIL import Image

from node.cli import main
from tests.phantom import make_dataset, make_hand

KEYS = {"file", "status", "reason", "message", "laterality", "pixel_spacing_mm", "pixel_spacing_source", "bones",
        "cortical_thickness_mm", "outer_width_mm", "mci", "vpa_mm", "bhi", "dxr_bmd_g_cm2", "t_score",
        "z_score", "who_category", "analysis_version"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    image, truth = make_hand(0, spacing_mm=0.25, field_mm=(240.0, 180.0), noise=0.0)
    make_dataset(image, truth, spacing_mm=0.2, sex="F", age="071Y").save_as(d / "hand.dcm", enforce_file_format=True)
    make_dataset(image, truth, spacing_attribute=None).save_as(d / "nospacing.dcm", enforce_file_format=True)
    make_dataset(image, truth, spacing_mm=0.4).save_as(d / "coarse.dcm", enforce_file_format=True)
    Image.fromarray((image / image.max() * 255).astype(np.uint8)).save(d / "hand.png")
    (d / "junk.dcm").write_bytes(b"not a dicom file")
    sub = d / "folder" / "deeper"
    sub.mkdir(parents=True)
    make_dataset(image, truth, spacing_attribute=None).save_as(sub / "b.dcm", enforce_file_format=True)
    Image.fromarray((image / image.max() * 255).astype(np.uint8)).save(d / "folder" / "a.jpg")
    (d / "folder" / "README.txt").write_text("skipped")
    return d


def _run(capsys, *argv):
    code = main(["analyze", *map(str, argv)])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    return code, lines, err


def test_json_lines_in_input_order_and_exit_1_for_unreadable(capsys, inputs):
    files = [inputs / "nospacing.dcm", inputs / "hand.png", inputs / "junk.dcm", inputs / "coarse.dcm",
             inputs / "missing.dcm"]
    code, lines, err = _run(capsys, *files)
    assert code == 1
    assert [ln["file"] for ln in lines] == [str(f) for f in files]
    assert all(KEYS <= set(ln) for ln in lines)
    assert not any("porosity" in ln for ln in lines)  # not measured: not reported
    assert [(ln["status"], ln["reason"]) for ln in lines] == [
        ("refused", "no_pixel_spacing"), ("refused", "no_pixel_spacing"), ("error", "unreadable"),
        ("refused", "resolution_too_low"), ("error", "unreadable")]
    assert all(ln["message"] and "\n" not in ln["message"] for ln in lines)
    assert lines[0]["laterality"] == "L"
    assert "Traceback" not in err


def test_a_picture_too_small_to_hold_a_hand_says_so(capsys, tmp_path):
    Image.fromarray(np.zeros((40, 3000), np.uint8)).save(tmp_path / "strip.png")
    code, [line], err = _run(capsys, "--pixel-spacing", "0.1", tmp_path / "strip.png")
    assert code == 1 and (line["status"], line["reason"]) == ("error", "unreadable")
    assert line["message"] == "The image is too small (3000 x 40 pixels; at least 64 on each side)."


def test_refused_only_exits_0_and_header_values_are_overridable(capsys, inputs):
    code, lines, _ = _run(capsys, inputs / "nospacing.dcm", "--sex", "m", "--age", "50")
    assert code == 0
    assert (lines[0]["sex"], lines[0]["age_years"]) == ("M", 50.0)
    code, lines, _ = _run(capsys, inputs / "nospacing.dcm")
    assert (lines[0]["sex"], lines[0]["age_years"]) == ("F", 62.0)


def test_pixel_spacing_option_applies_to_pictures_and_dicom(capsys, inputs):
    code, lines, _ = _run(capsys, inputs / "hand.png", inputs / "nospacing.dcm", "--pixel-spacing", "0.2")
    assert code == 0
    for ln in lines:
        assert (ln["pixel_spacing_mm"], ln["pixel_spacing_source"]) == (0.2, "cli")
        # Without --pixel-spacing both are refused as no_pixel_spacing (first test); with it the
        # phantom hand is measurable, so the option must actually reach the analysis.
        assert (ln["status"], ln["reason"]) == ("ok", None)
    code, lines, _ = _run(capsys, inputs / "hand.dcm")
    assert (lines[0]["pixel_spacing_mm"], lines[0]["pixel_spacing_source"]) == (0.2, "PixelSpacing")


def test_folders_are_recursed_in_sorted_order_with_progress(capsys, inputs):
    code, lines, err = _run(capsys, inputs / "folder")
    assert code == 0
    assert [ln["file"] for ln in lines] == [str(inputs / "folder" / "a.jpg"),
                                             str(inputs / "folder" / "deeper" / "b.dcm")]
    assert "2/2" in err


@pytest.mark.parametrize("argv", [
    ["--pixel-spacing", "-0.1", "x.dcm"], ["--pixel-spacing", "abc", "x.dcm"], ["--sex", "X", "x.dcm"],
    ["--age", "400", "x.dcm"], [],
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv):
    code = main(["analyze", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_invalid_reference_tables_exit_2(capsys, inputs, tmp_path):
    (tmp_path / "bad.csv").write_text("sex,age_min\nF,30\n")
    code = main(["analyze", str(inputs / "nospacing.dcm"), "--reference-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2 and "missing column" in err and len(err.strip().splitlines()) == 1


def test_overlays_and_dicom_outputs(capsys, inputs, tmp_path):
    code, lines, err = _run(capsys, inputs / "hand.dcm", inputs / "hand.png", "--pixel-spacing", "0.2",
                            "--overlay-dir", tmp_path / "ov", "--dicom-out", tmp_path / "dcm")
    assert code == 0, err
    pngs = sorted(p.name for p in (tmp_path / "ov").iterdir())
    assert pngs == ["hand-2.png", "hand.png"]
    assert Image.open(tmp_path / "ov" / "hand.png").mode == "RGB"
    written = [pydicom.dcmread(p) for p in (tmp_path / "dcm").iterdir()]
    # Only the DICOM input gets DICOM outputs (a picture has no study to attach them to):
    # one measured hand -> one Comprehensive SR and one Secondary Capture.
    assert sorted((ds.Modality, ds.SOPClassUID) for ds in written) == [
        ("OT", "1.2.840.10008.5.1.4.1.1.7"), ("SR", "1.2.840.10008.5.1.4.1.1.88.33")]
    source = pydicom.dcmread(inputs / "hand.dcm")
    assert all(ds.StudyInstanceUID == source.StudyInstanceUID for ds in written)
