"""``dxr-node locate``: the hand finder alone, JSON Lines contract, inputs, exit codes, overlays."""

import json

import numpy as np
import pytest
from PIL import Image

from node.cli import main
from tests.phantom import make_dataset, make_hand, make_non_hand

KEYS = {"file", "status", "reason", "message", "view", "maturity", "metacarpals", "pixel_spacing_mm",
        "anatomy_pixel_spacing_mm"}
SPACING = 0.25  # mm: coarse enough for a fast suite; the finder works up to 1 mm


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("locate")
    image, truth = make_hand(0, spacing_mm=SPACING, noise=0.0)
    make_dataset(image, truth, spacing_mm=SPACING).save_as(d / "hand.dcm", enforce_file_format=True)
    # A DICOM with pixels coarser than DXR can measure (0.4 mm): the finder still runs.
    make_dataset(image, truth, spacing_mm=0.4).save_as(d / "coarse.dcm", enforce_file_format=True)
    make_dataset(image, truth, spacing_mm=1.5).save_as(d / "too_coarse.dcm", enforce_file_format=True)
    Image.fromarray((image / image.max() * 255).astype(np.uint8)).save(d / "hand.png")
    knee = make_non_hand(0, spacing_mm=SPACING)
    Image.fromarray((knee / knee.max() * 255).astype(np.uint8)).save(d / "knee.png")
    (d / "junk.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return d, truth


def _run(capsys, *argv):
    code = main(["locate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_phantom_located_with_ii_to_iv_near_the_truth(inputs, capsys):
    d, truth = inputs
    code, lines, err = _run(capsys, d / "hand.dcm", d / "hand.png", "--pixel-spacing", SPACING)
    assert code == 0, err
    assert [x["file"] for x in lines] == [str(d / "hand.dcm"), str(d / "hand.png")]
    for line in lines:
        assert set(line) == KEYS
        assert (line["status"], line["view"], line["maturity"], line["reason"]) == ("located", "PA", "adult", None)
        assert line["pixel_spacing_mm"] == SPACING
        assert line["anatomy_pixel_spacing_mm"] == pytest.approx(SPACING, rel=0.15)  # an adult-sized phantom
        for name in ("II", "III", "IV"):
            found, true = line["metacarpals"][name], truth.bones[name]
            mid = 0.5 * (np.add(found["base_px"], found["head_px"]))
            assert np.hypot(*(mid - np.asarray(true.mid_px))) * SPACING < 4.0
            assert found["length_mm"] == pytest.approx(true.length_mm, rel=0.15)


def test_header_spacing_used_and_coarse_pixels_allowed(inputs, capsys):
    d, _ = inputs
    code, lines, _ = _run(capsys, d / "coarse.dcm", d / "too_coarse.dcm")
    assert code == 0
    coarse, too_coarse = lines
    assert coarse["pixel_spacing_mm"] == 0.4 and coarse["reason"] != "resolution_too_low"
    assert (too_coarse["status"], too_coarse["reason"]) == ("refused", "resolution_too_low")


def test_refusals_and_errors(inputs, capsys):
    d, _ = inputs
    code, lines, _ = _run(capsys, d / "knee.png", d / "junk.jpg", d / "missing.png", "--pixel-spacing", SPACING)
    assert code == 1  # an unreadable input
    knee, junk, missing = lines
    assert (knee["status"], knee["reason"], knee["view"]) == ("refused", "not_pa_hand", None)
    assert (junk["status"], junk["reason"]) == ("error", "unreadable")
    assert (missing["status"], missing["reason"]) == ("error", "unreadable")
    code, lines, _ = _run(capsys, d / "hand.png")
    assert code == 0 and (lines[0]["status"], lines[0]["reason"]) == ("refused", "no_pixel_spacing")


@pytest.mark.parametrize("argv", [["--pixel-spacing", "0"], ["--pixel-spacing", "1.5"], ["--pixel-spacing", "abc"]])
def test_bad_arguments_exit_2_without_traceback(inputs, capsys, argv):
    d, _ = inputs
    code, lines, err = _run(capsys, d / "hand.png", *argv)
    assert code == 2 and lines == []
    assert "error" in err.strip().splitlines()[-1] and "Traceback" not in err


def test_overlay_written_per_input(inputs, capsys, tmp_path):
    d, _ = inputs
    code, lines, _ = _run(capsys, d / "hand.png", d / "knee.png", "--pixel-spacing", SPACING,
                          "--overlay-dir", tmp_path / "ov")
    assert code == 0
    pngs = sorted(p.name for p in (tmp_path / "ov").iterdir())
    assert pngs == ["hand.png", "knee.png"]
    with Image.open(tmp_path / "ov" / "hand.png") as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    # The metacarpal axes are drawn in orange over the grey film.
    orange = (rgb[..., 0] > 200) & (np.abs(rgb[..., 1] - 140) < 30) & (rgb[..., 2] < 60)
    assert orange.sum() > 50


def test_pixel_size_told_wrong_is_named_by_the_anatomy(inputs, capsys):
    """A PNG whose pixel size is given 1.5 times too large is still located, and the pixel size at
    which its metacarpals would be an adult's is close to the true one."""
    d, _ = inputs
    code, lines, _ = _run(capsys, d / "hand.png", "--pixel-spacing", SPACING * 1.5)
    assert code == 0 and lines[0]["status"] == "located"
    assert lines[0]["anatomy_pixel_spacing_mm"] == pytest.approx(SPACING, rel=0.15)
    code, lines, _ = _run(capsys, d / "knee.png", "--pixel-spacing", SPACING)
    assert lines[0]["status"] == "refused" and lines[0]["anatomy_pixel_spacing_mm"] is None
