"""measure_bone on phantom hands: geometry of the ROI and edges, robustness, refusals."""

import math

import numpy as np
import pytest

import analysis
from analysis import measure
from analysis.reference import load_reference_tables
from tests.phantom import TruthAxis, make_hand, truth_location

SPACING = 0.1
FIELD = (150.0, 130.0)  # mm: the metacarpals with margin, to keep the tests quick


@pytest.fixture(scope="module")
def hand():
    return make_hand(0, spacing_mm=SPACING, field_mm=FIELD)


def _dist_to_line(pts_cr, base_cr, head_cr):
    p = np.asarray(pts_cr, float)
    b, h = np.asarray(base_cr, float), np.asarray(head_cr, float)
    t = (h - b) / np.linalg.norm(h - b)
    d = p - b
    return d[:, 0] * t[1] - d[:, 1] * t[0]  # signed distance (px)


def test_roi_profiles_and_edges_follow_the_bone(hand):
    image, truth = hand
    bone = truth.bones["III"]
    res = measure.measure_bone(image, truth.axis("III"), SPACING, "III")
    assert res.status == "ok"
    assert res.profiles_total == measure.N_PROFILES >= 30
    assert res.profiles_used >= 0.9 * res.profiles_total
    assert 0.5 <= res.quality <= 1.0
    # ROI centred at mid-shaft, ROI_FRACTION * L long along the axis.
    assert np.hypot(*(np.subtract(res.roi_center_px, bone.mid_px))) * SPACING < 0.5
    poly = np.asarray(res.roi_polygon_px)
    assert poly.shape == (4, 2)
    roi_len_mm = np.hypot(*(poly[1] - poly[0])) * SPACING
    assert roi_len_mm == pytest.approx(measure.ROI_FRACTION * bone.length_mm, rel=0.02)
    # Edge polylines lie at the true radii on both sides (within 0.05 mm).
    outer_r = bone.outer_width_mm / 2 / SPACING
    inner_r = (bone.outer_width_mm / 2 - bone.cortical_thickness_mm) / SPACING
    for key, expected in (("outer_a", outer_r), ("inner_a", inner_r), ("inner_b", inner_r), ("outer_b", outer_r)):
        d = np.abs(_dist_to_line(res.edges_px[key], bone.base_px, bone.head_px))
        assert len(d) == res.profiles_used
        assert abs(np.median(d) - expected) * SPACING < 0.05, key
    assert res.axis_px[0] == pytest.approx(bone.base_px) and res.length_mm == pytest.approx(bone.length_mm)


@pytest.mark.parametrize("shift_mm, tilt_deg", [(1.0, 3.0), (-2.0, -4.0)])
def test_imprecise_axis_is_refined(hand, shift_mm, tilt_deg):
    """The hand finder's axis may be a mm or two off and tilted a few degrees."""
    image, truth = hand
    ax = truth.axis("II")
    base, head = np.array(ax.base_rc), np.array(ax.head_rc)
    mid = (base + head) / 2
    t = (head - base) / np.linalg.norm(head - base)
    n = np.array([-t[1], t[0]])
    a = math.radians(tilt_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    moved = TruthAxis(tuple(mid + rot @ (base - mid) + shift_mm / SPACING * n),
                      tuple(mid + rot @ (head - mid) + shift_mm / SPACING * n), ax.length_mm)
    res = measure.measure_bone(image, moved, SPACING, "II")
    bone = truth.bones["II"]
    assert res.status == "ok"
    assert abs(res.cortical_thickness_mm - bone.cortical_thickness_mm) < 0.05
    assert abs(res.outer_width_mm - bone.outer_width_mm) < 0.05


def test_axis_off_the_bone_is_refused(hand):
    image, truth = hand
    res = measure.measure_bone(image, TruthAxis((40.0, 40.0), (40.0, 600.0), 56.0), SPACING, "IV")
    assert (res.status, res.reason) == ("refused", "bone_not_found")
    assert res.cortical_thickness_mm is None
    between = TruthAxis(tuple((np.array(truth.axis("II").base_rc) + truth.axis("III").base_rc) / 2),
                        tuple((np.array(truth.axis("II").head_rc) + truth.axis("III").head_rc) / 2), 60.0)
    assert measure.measure_bone(image, between, SPACING, "II").reason == "bone_not_found"


def test_metal_over_a_bone_refuses_that_bone_only():
    image, truth = make_hand(3, spacing_mm=SPACING, field_mm=FIELD, metal_over="III")
    res = analysis.analyse_located(image, truth_location(truth), pixel_spacing_mm=SPACING)
    assert res.bones["III"].reason == "foreign_object_in_roi"
    assert res.bones["III"].cortical_thickness_mm is None
    assert res.bones["II"].status == res.bones["IV"].status == "ok"
    assert res.status == "ok" and res.reduced_service and res.bones_measured == 2


@pytest.mark.parametrize("seed", [0, 1, 6, 9])
def test_metal_over_iii_gives_ii_and_iv_with_reduced_service(seed):
    """The plate over III lies inside II's and IV's search windows; they are still measured
    (seeds 0, 1, 6, 9 used to refuse II) and accurately, III alone is refused."""
    image, truth = make_hand(seed, spacing_mm=SPACING, field_mm=FIELD, metal_over="III")
    res = analysis.analyse_located(image, truth_location(truth), pixel_spacing_mm=SPACING)
    assert (res.bones["III"].status, res.bones["III"].reason) == ("refused", "foreign_object_in_roi")
    for name in ("II", "IV"):
        bone = res.bones[name]
        assert bone.status == "ok", (name, bone.reason, bone.message)
        assert abs(bone.cortical_thickness_mm - truth.bones[name].cortical_thickness_mm) < 0.05
        assert abs(bone.outer_width_mm - truth.bones[name].outer_width_mm) < 0.05
    assert res.status == "ok" and res.reduced_service and res.bones_measured == 2


@pytest.mark.parametrize("seed", [1, 6, 9])
def test_metal_over_iii_full_pipeline_measures_ii_and_iv(seed):
    """The same through the hand finder (analyse_image): located axes, the metal check of
    analysis.qc and measure_bone together give II and IV, III refused, reduced service."""
    image, truth = make_hand(seed, spacing_mm=SPACING, metal_over="III")
    res = analysis.analyse_image(image, pixel_spacing_mm=SPACING)
    assert res.view == "PA" and res.status == "ok", (res.reason, res.message)
    assert (res.bones["III"].status, res.bones["III"].reason) == ("refused", "foreign_object_in_roi")
    assert res.bones["II"].status == res.bones["IV"].status == "ok"
    assert res.bones_measured == 2 and res.reduced_service
    assert res.to_json()["reduced_service"] is True


def test_steady_taper_is_shaft_flare_is_not():
    """A width changing linearly along the ROI (a real shaft) passes; a curving flare does not."""
    pos = np.linspace(-100.0, 100.0, 40)
    taper, flare = measure._width_taper(pos, 50.0 + 0.05 * pos, 200.0)
    assert taper == pytest.approx(0.2) and flare < 1e-9
    assert taper <= measure.MAX_TAPER and flare <= measure.MAX_FLARE
    flaring = 50.0 + 30.0 * np.exp((pos - 100.0) / 25.0)  # the head widening in the last quarter
    assert measure._width_taper(pos, flaring, 200.0)[1] > measure.MAX_FLARE


def test_very_noisy_image_is_low_quality():
    image, truth = make_hand(0, spacing_mm=SPACING, field_mm=FIELD, noise=0.18)  # 18x the usual noise
    res = measure.measure_bone(image, truth.axis("III"), SPACING, "III")
    assert (res.status, res.reason) == ("refused", "low_quality")
    assert res.quality < measure.QUALITY_MIN and res.cortical_thickness_mm is None


def test_orchestration_with_known_axes(hand):
    image, truth = hand
    ref = load_reference_tables(["sex,age_min,age_max,mean_g_cm2,sd_g_cm2,kind,source,derived\n"
                                 "F,30,46,0.598,0.034,young_adult,Black 2001,false\n"])
    res = analysis.analyse_located(image, truth_location(truth), pixel_spacing_mm=SPACING, laterality="L",
                                   sex="F", age_years=70.0, reference=ref)
    assert res.status == "ok" and res.bones_measured == 3 and not res.reduced_service
    t = np.mean([truth.bones[n].cortical_thickness_mm for n in ("II", "III", "IV")])
    w = np.mean([truth.bones[n].outer_width_mm for n in ("II", "III", "IV")])
    assert res.cortical_thickness_mm == pytest.approx(t, abs=0.03)
    assert res.outer_width_mm == pytest.approx(w, abs=0.03)
    assert res.mci == pytest.approx(2 * res.cortical_thickness_mm / res.outer_width_mm)
    assert res.t_score == pytest.approx((res.dxr_bmd_g_cm2 - 0.598) / 0.034)
    assert res.who_category in ("normal", "osteopenia", "osteoporosis")
    assert res.z_score is None and "age-matched" in res.scores_omitted_reason
    assert set(res.metacarpal_axes_px) == {"I", "II", "III", "IV", "V"}
    js = res.to_json()
    assert js["laterality"] == "L" and js["bones"]["III"]["profiles_used"] >= 30
    # Without a reference or without sex the scores are omitted with a reason, never guessed.
    res2 = analysis.analyse_located(image, truth_location(truth), pixel_spacing_mm=SPACING, reference=ref)
    assert res2.t_score is None and "sex" in res2.scores_omitted_reason


def test_one_bone_left_is_a_refusal(hand):
    image, truth = hand
    loc = truth_location(truth)
    loc.bone_refusals = {"II": ("foreign_object_in_roi", "Metal over II."), "IV": ("bone_not_found", "IV cut off.")}
    res = analysis.analyse_located(image, loc, pixel_spacing_mm=SPACING)
    assert res.status == "refused" and res.reason in ("foreign_object_in_roi", "bone_not_found")
    assert res.bones["III"].status == "ok" and res.dxr_bmd_g_cm2 is None


@pytest.mark.parametrize("slide", [0.3, 0.45, -0.4])
def test_axis_slid_along_the_finger_gives_no_number(hand, slide):
    """An axis shifted towards the head (or base) must be refused, never measured on the flare."""
    image, truth = hand
    ax = truth.axis("III")
    base, head = np.array(ax.base_rc), np.array(ax.head_rc)
    shift = slide * (head - base)
    res = measure.measure_bone(image, TruthAxis(tuple(base + shift), tuple(head + shift), ax.length_mm), SPACING, "III")
    assert res.status == "refused" and res.reason in ("bone_not_found", "low_quality")
    assert res.cortical_thickness_mm is None and res.message


# Real radiographs: FracAtlas (Abedeen et al., Sci Data 2023, doi:10.1038/s41597-023-02432-4),
# CC BY 4.0; read from ../shared, never copied into the repository. No pixel spacing is
# published, so only agreement between two exposures of one hand and unitless MCI are checked.
REAL = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data" / "real-hands"


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real hand images not present at {REAL}")
def test_real_hand_two_exposures_agree():
    """IMG0000203 (fingers up) and IMG0000204 (fingers down) show the same hand."""
    from PIL import Image

    results = []
    for name in ("fracatlas_IMG0000203_adult_R_PA_rotated180.jpg", "fracatlas_IMG0000204_adult_R_PA.jpg"):
        path = REAL / name
        if not path.is_file():
            pytest.skip(f"{path} missing")
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        results.append(analysis.analyse_image(image, pixel_spacing_mm=0.1))
    a, b = results
    assert a.status == b.status == "ok"
    for name in ("II", "III", "IV"):
        ba, bb = a.bones[name], b.bones[name]
        assert ba.status == bb.status == "ok", name
        assert 0.3 <= ba.mci <= 0.8 and 0.3 <= bb.mci <= 0.8, name
        assert abs(ba.mci - bb.mci) <= 0.05 * ba.mci, name
        assert abs(ba.outer_width_mm - bb.outer_width_mm) <= 0.03 * ba.outer_width_mm, name


def test_bone_disagreeing_with_the_others_is_refused():
    """A failed fit on one bone (here: a bone result forged with half the cortex) is not averaged in."""
    from analysis import _check_consistency
    from analysis.result import BoneResult

    bones = [BoneResult(name=n, cortical_thickness_mm=t, outer_width_mm=8.0) for n, t in
             (("II", 2.0), ("III", 1.9), ("IV", 0.9))]
    for b in bones:
        b.mci = 2 * b.cortical_thickness_mm / b.outer_width_mm
    _check_consistency(bones)
    assert [b.status for b in bones] == ["ok", "ok", "refused"]
    assert bones[2].reason == "low_quality" and bones[2].cortical_thickness_mm is None
    two = [BoneResult(name="II", cortical_thickness_mm=2.0, outer_width_mm=8.0, mci=0.5),
           BoneResult(name="III", cortical_thickness_mm=0.8, outer_width_mm=8.0, mci=0.2)]
    _check_consistency(two)
    assert [b.status for b in two] == ["refused", "refused"]
    agree = [BoneResult(name="II", cortical_thickness_mm=2.0, outer_width_mm=8.0, mci=0.5),
             BoneResult(name="III", cortical_thickness_mm=1.7, outer_width_mm=8.0, mci=0.425)]
    _check_consistency(agree)
    assert [b.status for b in agree] == ["ok", "ok"]


@pytest.mark.parametrize("curve, bend_expected", [("linear", False), ("gamma 0.6", True), ("gamma 1.6", True),
                                                   ("linear in exposure", True)])
def test_the_bent_fit_is_tried_only_when_the_straight_residuals_look_like_a_display_curve(curve, bend_expected):
    """measure._bend_shows on ten noisy profiles fitted straight: on grey linear in attenuation the
    residual is noise (nothing for the bend), under a display curve it is mostly v^2/v^3."""
    from analysis import kernels
    from tests.analysis.test_kernels import DISPLAY_CURVES, P_PLAIN, X, _start

    shown = {"linear": lambda x: x, **DISPLAY_CURVES}[curve]
    plain = kernels.profile_model_numpy(X, P_PLAIN)[0]
    window = (plain - plain.min()) / np.ptp(plain) * 0.6 + 0.2
    clean = shown(window) / (shown(0.8) - shown(0.2))
    rng = np.random.default_rng(3)
    profiles = clean[None, :] + 0.004 * rng.standard_normal((10, X.size))
    start = _start(P_PLAIN)
    start[9] = 0.0
    start[5], start[7], start[8] = clean[0], start[7] / np.ptp(plain), start[8] / np.ptp(plain)
    straight = np.ones(kernels.N_PARAMS, dtype=np.bool_)
    straight[9] = straight[10] = straight[11] = straight[12] = False
    fitted, _, _, status = kernels.fit_profiles(X, profiles, np.tile(start, (10, 1)), straight, 100)
    assert (status != kernels.FIT_BAD_INPUT).all()
    shows = measure._bend_shows(X, profiles, fitted)
    assert (shows < measure.BEND_TRY_RATIO) == bend_expected, shows
