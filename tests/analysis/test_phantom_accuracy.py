"""The issue's bars on the project's phantom.

* 0.1 mm pixels, detector blur sigma 0.05-0.2 mm, realistic quantum noise, any pose:
  mean |error| of T and of W <= 0.05 mm per bone.
* 10 repositioned acquisitions of one hand: coefficient of variation of VPA <= 0.5 %.

Measurement uses the phantom's known axes (the hand finder is tested on its own), so these
numbers are the accuracy of ``analysis.measure`` + ``analysis.kernels`` alone.
"""

import numpy as np
import pytest

import analysis
from analysis import indices
from analysis.calibration import image_from_dataset
from analysis.measure import measure_bone
from tests.phantom import make_dataset, make_hand, truth_location

BONES = ("II", "III", "IV")
FIELD = (150.0, 130.0)
BAR_MM = 0.05
POSES = [
    dict(seed=11, rotation_deg=0.0, laterality="L", fingers="up"),
    dict(seed=12, rotation_deg=33.0, laterality="R", fingers="down"),
    dict(seed=13, rotation_deg=-71.0, laterality="L", fingers="up"),
]


def _errors(image, truth, spacing):
    out = {}
    for name in BONES:
        res = measure_bone(image, truth.axis(name), spacing, name)
        assert res.status == "ok", (name, res.reason)
        bone = truth.bones[name]
        out[name] = (res.cortical_thickness_mm - bone.cortical_thickness_mm, res.outer_width_mm - bone.outer_width_mm)
    return out


@pytest.mark.parametrize("blur_mm", [0.05, 0.1, 0.2])
def test_accuracy_bar_at_0_1_mm(blur_mm):
    errs = {name: [] for name in BONES}
    for pose in POSES:
        image, truth = make_hand(spacing_mm=0.1, blur_sigma_mm=blur_mm, noise=0.01, field_mm=FIELD, **pose)
        for name, e in _errors(image, truth, 0.1).items():
            errs[name].append(e)
    for name in BONES:
        e = np.abs(np.array(errs[name]))
        mean_t, mean_w = e.mean(axis=0)
        assert mean_t <= BAR_MM, f"{name}: mean |error| of T {mean_t:.4f} mm at blur {blur_mm} mm"
        assert mean_w <= BAR_MM, f"{name}: mean |error| of W {mean_w:.4f} mm at blur {blur_mm} mm"


@pytest.mark.parametrize("spacing_mm, blur_mm", [(0.08, 0.2), (0.15, 0.1), (0.2, 0.15)])
def test_accuracy_across_pixel_sizes(spacing_mm, blur_mm):
    image, truth = make_hand(21, spacing_mm=spacing_mm, blur_sigma_mm=blur_mm, rotation_deg=17.0, field_mm=FIELD)
    for name, (dt, dw) in _errors(image, truth, spacing_mm).items():
        assert abs(dt) <= BAR_MM and abs(dw) <= BAR_MM, (name, dt, dw)


@pytest.mark.parametrize("photometric, bits, spacing_attribute, modality", [
    ("MONOCHROME1", 10, "magnified", "CR"),
    ("MONOCHROME2", 16, "ImagerPixelSpacing", "DX"),
])
def test_accuracy_through_dicom(photometric, bits, spacing_attribute, modality):
    """Quantisation to 10-16 bits, inversion and spacing from the header keep the bar."""
    image, truth = make_hand(31, spacing_mm=0.1, blur_sigma_mm=0.1, rotation_deg=-20.0, field_mm=FIELD)
    ds = make_dataset(image, truth, photometric=photometric, bits_stored=bits, modality=modality,
                      spacing_attribute=spacing_attribute)
    cal = image_from_dataset(ds)
    assert cal.pixel_spacing_mm == pytest.approx(0.1)
    for name, (dt, dw) in _errors(cal.image, truth, cal.pixel_spacing_mm).items():
        assert abs(dt) <= BAR_MM and abs(dw) <= BAR_MM, (name, dt, dw)


def test_precision_of_vpa_over_ten_repositioned_acquisitions():
    vpa = []
    bmd = []
    for k in range(10):
        image, truth = make_hand(7, repeat=k, field_mm=FIELD)
        res = analysis.analyse_located(image, truth_location(truth), pixel_spacing_mm=0.1)
        assert res.status == "ok" and res.bones_measured == 3
        vpa.append([res.bones[n].vpa_mm for n in BONES] + [res.vpa_mm])
        bmd.append(res.dxr_bmd_g_cm2)
    vpa = np.array(vpa)
    cv = vpa.std(axis=0, ddof=1) / vpa.mean(axis=0)
    assert np.all(cv <= 0.005), f"CV of VPA per bone II, III, IV and combined: {np.round(cv * 100, 3)} %"
    # The repeats are real repositionings: the hand moved between them.
    assert np.ptp(vpa[:, 3]) > 0
    assert np.std(bmd, ddof=1) / np.mean(bmd) <= 0.005
    # And the combined VPA is the formula of the mean T and W (the fixed combination rule).
    assert res.vpa_mm == pytest.approx(indices.vpa_mm(res.cortical_thickness_mm, res.outer_width_mm))


def test_thinner_cortex_is_measured_thinner():
    """Osteoporotic phantom (cortex x0.7): T and DXR-BMD fall accordingly."""
    normal, truth_n = make_hand(41, field_mm=FIELD)
    thin, truth_t = make_hand(41, field_mm=FIELD, cortical_scale=0.7)
    rn = analysis.analyse_located(normal, truth_location(truth_n), pixel_spacing_mm=0.1)
    rt = analysis.analyse_located(thin, truth_location(truth_t), pixel_spacing_mm=0.1)
    assert rt.cortical_thickness_mm == pytest.approx(0.7 * rn.cortical_thickness_mm, abs=0.05)
    assert rt.dxr_bmd_g_cm2 < 0.8 * rn.dxr_bmd_g_cm2


@pytest.mark.parametrize("kw", [
    dict(seed=4, rotation_deg=8.0),
    dict(seed=14, rotation_deg=-30.0, laterality="R", fingers="down"),
    dict(seed=5, spacing_mm=0.15, blur_sigma_mm=0.15),
    dict(seed=10, rotation_deg=90.0),
], ids=["L-up-8", "R-down-minus30", "L-0.15mm", "L-rot90"])
def test_full_pipeline_from_dicom(kw):
    """analysis.analyse on a DICOM phantom: the hand finder's axes, then the bars on every bone."""
    image, truth = make_hand(**kw)
    ds = make_dataset(image, truth, photometric="MONOCHROME1", bits_stored=12, sex="F", age="058Y")
    res = analysis.analyse(ds)
    assert res.status == "ok", (res.reason, res.message)
    assert res.laterality == truth.laterality and res.view == "PA"
    assert (res.sex, res.age_years) == ("F", 58.0)
    assert res.bones_measured == 3
    for name in BONES:
        bone, ref = res.bones[name], truth.bones[name]
        assert abs(bone.cortical_thickness_mm - ref.cortical_thickness_mm) <= BAR_MM, name
        assert abs(bone.outer_width_mm - ref.outer_width_mm) <= BAR_MM, name
        assert abs(bone.length_mm - ref.length_mm) <= 0.1 * ref.length_mm, name


@pytest.mark.parametrize("unsharp", [(0.5, 0.5), (1.0, 1.0), (3.0, 2.0)])
def test_accuracy_under_vendor_edge_enhancement(unsharp):
    """Unsharp masking (radius mm, amount) on the image: modelled, so T and W keep the bar."""
    image, truth = make_hand(51, spacing_mm=0.1, blur_sigma_mm=0.1, rotation_deg=12.0, field_mm=FIELD,
                             unsharp=unsharp)
    for name, (dt, dw) in _errors(image, truth, 0.1).items():
        assert abs(dt) <= BAR_MM / 2 and abs(dw) <= BAR_MM / 2, (name, dt, dw)


def test_unequal_walls_are_measured_as_they_are():
    """The radial cortex is thicker than the ulnar one (research 1.1): T is their mean, and the
    detected edges show the two different walls."""
    image, truth = make_hand(61, spacing_mm=0.1, field_mm=FIELD, wall_asymmetry=0.3, rotation_deg=-15.0)
    for name in BONES:
        res = measure_bone(image, truth.axis(name), 0.1, name)
        bone = truth.bones[name]
        assert abs(res.cortical_thickness_mm - bone.cortical_thickness_mm) <= BAR_MM
        walls = []
        for outer, inner in (("outer_a", "inner_a"), ("outer_b", "inner_b")):
            d = np.hypot(*(np.array(res.edges_px[outer]) - np.array(res.edges_px[inner])).T) * 0.1
            walls.append(float(np.mean(d)))
        expected = (bone.cortical_thickness_mm * 1.15, bone.cortical_thickness_mm * 0.85)
        assert sorted(walls) == pytest.approx(sorted(expected), abs=BAR_MM), name


def test_phantom_projects_the_stated_geometry():
    """The phantom itself: across mid-shaft, attenuation above the soft tissue equals
    mu_cortex * (outer chord - inner chord) + mu_marrow * inner chord for the stated W and T."""
    from analysis import kernels
    from tests import phantom

    image, truth = make_hand(71, spacing_mm=0.1, blur_sigma_mm=0.0, noise=0.0, field_mm=FIELD, rotation_deg=23.0)
    bone = truth.bones["III"]
    ax = truth.axis("III")
    base, head = np.array(ax.base_rc), np.array(ax.head_rc)
    t = (head - base) / np.linalg.norm(head - base)
    n = np.array([-t[1], t[0]])
    offsets = np.arange(-70.0, 70.5, 0.5)
    prof = kernels.sample_profiles(image, ((base + head) / 2)[None, :], n, t, offsets, 1, 1.0)[0]
    d_mm = offsets * 0.1
    big_r, small_r = bone.outer_width_mm / 2, bone.outer_width_mm / 2 - bone.cortical_thickness_mm
    outer = 2 * np.sqrt(np.clip(big_r**2 - d_mm**2, 0, None))
    inner = 2 * np.sqrt(np.clip(small_r**2 - d_mm**2, 0, None))
    expected = phantom.MU_CORTEX * (outer - inner) + phantom.MU_MARROW_SHAFT * inner
    far = np.abs(d_mm) > big_r + 0.5
    background = np.polyval(np.polyfit(d_mm[far], prof[far], 1), d_mm)
    # Away from the edges (where pixel averaging and bilinear sampling round the corners).
    clear = (np.abs(np.abs(d_mm) - big_r) > 0.3) & (np.abs(np.abs(d_mm) - small_r) > 0.3)
    assert np.max(np.abs((prof - background - expected)[clear])) < 0.01 * expected.max()


def _eight_bit_window(image, low_percentile=0.5, high_percentile=99.5):
    """A modality's 8-bit export: a linear window over the hand's range, clipped, rounded to 0..255."""
    low, high = np.percentile(image, [low_percentile, high_percentile])
    return np.rint(np.clip((image - low) / (high - low), 0.0, 1.0) * 255.0)


@pytest.mark.parametrize("unsharp", [None, (1.0, 1.0)], ids=["window-only", "unsharp+window"])
def test_vendor_processing_moves_edges_less_than_precision_budget(unsharp):
    """Issue 4: an 8-bit window (with or without edge enhancement) must not move the measured
    edges by more than the precision budget: VPA within the 0.5 % CV bar of the unprocessed
    measurement, T and W within half the 0.05 mm accuracy bar."""
    image, truth = make_hand(71, spacing_mm=0.1, blur_sigma_mm=0.1, rotation_deg=-20.0, field_mm=FIELD,
                             unsharp=unsharp)
    processed = _eight_bit_window(image)
    assert len(np.unique(processed)) <= 256
    for name in BONES:
        before = measure_bone(image, truth.axis(name), 0.1, name)
        after = measure_bone(processed, truth.axis(name), 0.1, name)
        assert before.status == after.status == "ok", (name, after.reason)
        assert abs(after.cortical_thickness_mm - before.cortical_thickness_mm) <= BAR_MM / 2, name
        assert abs(after.outer_width_mm - before.outer_width_mm) <= BAR_MM / 2, name
        vpa_before = indices.vpa_mm(before.cortical_thickness_mm, before.outer_width_mm)
        vpa_after = indices.vpa_mm(after.cortical_thickness_mm, after.outer_width_mm)
        assert abs(vpa_after / vpa_before - 1.0) <= 0.005, (name, vpa_before, vpa_after)
