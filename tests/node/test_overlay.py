"""node.report.overlay.draw_overlay: size, mode, and the drawn geometry where the result says."""

from __future__ import annotations

import numpy as np

from analysis.result import AnalysisResult, BoneResult, refused
from node.report.overlay import AXIS_COLOUR, OUTER_EDGE_COLOUR, OUTLINE_COLOUR, REFUSED_COLOUR, ROI_COLOUR, draw_overlay


def _image(rows=1200, cols=900):
    yy, xx = np.mgrid[0:rows, 0:cols]
    return 100.0 + 20.0 * np.sin(xx / 37.0) + 0.01 * yy  # textured grey, no pure colours


def _result():
    bones = {}
    for k, name in enumerate(("II", "III", "IV")):
        c = 300 + 150 * k
        poly = [(c - 40, 500), (c + 40, 500), (c + 40, 700), (c - 40, 700)]
        edges = {"outer_a": [(c - 30, 500), (c - 30, 700)], "inner_a": [(c - 15, 500), (c - 15, 700)],
                 "inner_b": [(c + 15, 500), (c + 15, 700)], "outer_b": [(c + 30, 500), (c + 30, 700)]}
        bones[name] = BoneResult(name, mci=0.5, roi_center_px=(c, 600), roi_polygon_px=poly, edges_px=edges,
                                 axis_px=[(c, 900), (c, 300)])
    axes = {n: [(150 + 150 * k, 900), (150 + 150 * k, 300)] for k, n in enumerate(("I", "II", "III", "IV", "V"))}
    outline = [(100, 100), (800, 100), (800, 1100), (100, 1100)]
    return AnalysisResult(status="ok", bones=bones, metacarpal_axes_px=axes, hand_outline_px=outline, mci=0.5)


def _has_colour(pic, colour, box, tol=40):
    a = np.asarray(pic).astype(int)[box[1] : box[3], box[0] : box[2]]
    return bool(np.any(np.all(np.abs(a - np.array(colour)) <= tol, axis=-1)))


def test_overlay_is_rgb_of_downsized_size():
    pic = draw_overlay(_image(), _result(), max_side_px=600)
    assert pic.mode == "RGB"
    assert pic.size == (450, 600)  # 900x1200 scaled by 0.5


def test_small_image_is_not_enlarged():
    pic = draw_overlay(_image(200, 150), refused("lateral_view"), max_side_px=1024)
    assert pic.size == (150, 200)


def test_drawn_colours_at_roi_axis_and_outline_positions():
    scale = 0.5
    pic = draw_overlay(_image(), _result(), max_side_px=600)
    for k in range(3):
        c = (300 + 150 * k) * scale
        # ROI top edge (row 500) and outer edge (col c-30) in overlay pixels
        assert _has_colour(pic, ROI_COLOUR, (int(c - 10), int(500 * scale - 3), int(c + 10), int(500 * scale + 3)))
        assert _has_colour(pic, OUTER_EDGE_COLOUR, (int(c - 30 * scale - 3), int(550 * scale), int(c - 30 * scale + 3), int(650 * scale)))
    # axis of I (not a measured bone) at column 150, rows 300..900
    assert _has_colour(pic, AXIS_COLOUR, (int(150 * scale - 3), int(400 * scale), int(150 * scale + 3), int(800 * scale)))
    assert _has_colour(pic, OUTLINE_COLOUR, (int(400 * scale), int(100 * scale - 3), int(500 * scale), int(100 * scale + 3)))
    # nothing yellow far from any ROI (e.g. the bottom-left corner)
    assert not _has_colour(pic, ROI_COLOUR, (0, 560, 40, 600), tol=20)


def test_refused_image_shows_reason_in_large_red_text():
    pic = draw_overlay(_image(), refused("immature_skeleton"), max_side_px=600)
    top = np.asarray(pic).astype(int)[: int(0.12 * 600)]
    red = np.all(np.abs(top - np.array(REFUSED_COLOUR)) <= 40, axis=-1)
    assert red.sum() > 300  # large letters, not a speck
    bottom = np.asarray(pic).astype(int)[400:]
    assert not np.any(np.all(np.abs(bottom - np.array(REFUSED_COLOUR)) <= 40, axis=-1))


def test_refused_bone_is_named_at_its_axis():
    result = _result()
    result.bones["III"] = BoneResult("III", status="refused", reason="foreign_object_in_roi")
    pic = draw_overlay(_image(), result, max_side_px=600)
    # III's axis runs down column 450 (overlay column 225) between rows 300 and 900.
    assert _has_colour(pic, REFUSED_COLOUR, (225 - 60, 280, 225 + 60, 320))
    assert not _has_colour(pic, ROI_COLOUR, (225 - 10, 240, 225 + 10, 260))  # no ROI drawn for III


def test_long_refusal_title_fits_a_narrow_picture():
    narrow = _image(1000, 300)
    pic = draw_overlay(narrow, refused("immature_skeleton"), max_side_px=600)
    a = np.asarray(pic).astype(int)
    red = np.all(np.abs(a - np.array(REFUSED_COLOUR)) <= 40, axis=-1)
    assert red.sum() > 100
    assert not red[:, :2].any() and not red[:, -2:].any()  # the title is not cut at the edges


def test_result_caption_fits_a_portrait_picture():
    # A hand panel cropped to a narrow hand: 300 px wide, 1100 px tall.
    bones = _result().bones
    bones["IV"] = BoneResult("IV", status="refused", reason="foreign_object_in_roi")  # "reduced service" too
    result = AnalysisResult(status="ok", bones=bones, mci=0.448, dxr_bmd_g_cm2=0.354)
    assert result.reduced_service
    pic = draw_overlay(np.zeros((1100, 300)), result, max_side_px=1100)
    a = np.asarray(pic).astype(int)[:200]
    white = np.all(a >= 230, axis=-1)
    assert white.sum() > 300  # the caption is there
    assert not white[:, -3:].any()  # and not cut at the right edge
