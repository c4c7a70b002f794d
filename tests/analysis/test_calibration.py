"""Pixels to a bone-bright float image and mm: spacing sources, LUTs, photometric, transfer syntaxes."""

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000, JPEG2000Lossless, RLELossless

import analysis
from analysis.calibration import CalibrationError, image_from_dataset, pixel_spacing_from_dataset
from tests.phantom import make_dataset, make_hand


@pytest.fixture(scope="module")
def small_image():
    """A 150 x 120 crop of a phantom hand's metacarpals (float, bone bright)."""
    image, truth = make_hand(0, spacing_mm=0.2, shape_px=(400, 300), noise=0.0)
    return image[150:300, 90:210].copy()


def _ds(image, **kw):
    kw.setdefault("spacing_mm", 0.1)
    return make_dataset(image, None, **kw)


def test_spacing_sources(small_image):
    assert pixel_spacing_from_dataset(_ds(small_image)) == (0.1, 0.1, "PixelSpacing")
    ds = _ds(small_image, spacing_attribute="ImagerPixelSpacing", spacing_mm=0.14)
    assert pixel_spacing_from_dataset(ds) == (0.14, 0.14, "ImagerPixelSpacing")
    ds = _ds(small_image, spacing_attribute="magnified", spacing_mm=0.1, magnification=1.25)
    row, col, source = pixel_spacing_from_dataset(ds)
    assert source == "ImagerPixelSpacing/magnification" and row == pytest.approx(0.1) and col == pytest.approx(0.1)
    ds = _ds(small_image, spacing_attribute="both")
    ds.ImagerPixelSpacing = ["0.11", "0.11"]  # PixelSpacing (calibrated) wins
    cal = image_from_dataset(ds)
    assert (cal.pixel_spacing_mm, cal.pixel_spacing_source) == (0.1, "PixelSpacing")
    cal = image_from_dataset(ds, pixel_spacing_mm=0.09)
    assert (cal.pixel_spacing_mm, cal.pixel_spacing_source) == (0.09, "cli")


def test_missing_coarse_and_non_square_spacing_are_refused(small_image):
    with pytest.raises(CalibrationError) as err:
        image_from_dataset(_ds(small_image, spacing_attribute=None))
    assert err.value.reason == "no_pixel_spacing"
    assert image_from_dataset(_ds(small_image, spacing_attribute=None), pixel_spacing_mm=0.1).pixel_spacing_source == "cli"
    with pytest.raises(CalibrationError) as err:
        image_from_dataset(_ds(small_image, spacing_mm=0.3))
    assert err.value.reason == "resolution_too_low"
    ds = _ds(small_image)
    ds.PixelSpacing = ["0.1", "0.15"]
    with pytest.raises(CalibrationError) as err:
        image_from_dataset(ds)
    assert err.value.reason == "non_square_pixels"
    r = analysis.analyse(_ds(small_image, spacing_attribute=None, laterality="R"))
    assert (r.status, r.reason, r.laterality) == ("refused", "no_pixel_spacing", "R")
    assert r.message and "\n" not in r.message
    r = analysis.analyse(_ds(small_image, spacing_mm=0.3))
    assert (r.status, r.reason) == ("refused", "resolution_too_low")


def test_monochrome1_is_inverted_to_bone_bright(small_image):
    m2 = image_from_dataset(_ds(small_image, photometric="MONOCHROME2", bits_stored=12)).image
    m1 = image_from_dataset(_ds(small_image, photometric="MONOCHROME1", bits_stored=12)).image
    diff = m1 - m2
    assert np.ptp(diff) == 0  # the same image up to an offset
    assert np.corrcoef(m1.ravel(), small_image.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_bits_stored(small_image, bits):
    image = image_from_dataset(_ds(small_image, bits_stored=bits)).image
    assert image.max() <= 2**bits - 1
    assert np.corrcoef(image.ravel(), small_image.ravel())[0, 1] > 0.999


def test_modality_lut_applied_window_ignored(small_image):
    plain = image_from_dataset(_ds(small_image)).image
    rescaled = image_from_dataset(_ds(small_image, rescale=(2.0, -100.0))).image
    assert np.allclose(rescaled, 2.0 * plain - 100.0)
    windowed = image_from_dataset(_ds(small_image, window=(1000.0, 200.0))).image
    assert np.array_equal(windowed, plain)  # a display window would clip the bone: not applied


def test_unreadable_pixels_are_an_error(small_image):
    ds = _ds(small_image)
    del ds.PixelData
    with pytest.raises(CalibrationError) as err:
        image_from_dataset(ds)
    assert err.value.reason == "unreadable"
    r = analysis.analyse(ds)
    assert (r.status, r.reason) == ("error", "unreadable")
    ds = _ds(small_image)
    ds.PixelData = ds.PixelData[:100]  # truncated
    assert analysis.analyse(ds).reason == "unreadable"


@pytest.mark.parametrize("keyword, value", [("RescaleSlope", "abc"), ("RescaleIntercept", "x"),
                                            ("RescaleSlope", ["1", "2"]), ("RescaleSlope", "nan")])
def test_malformed_rescale_is_an_error_result_not_an_exception(small_image, keyword, value):
    """A vendor's broken RescaleSlope/Intercept made ``analyse`` raise ValueError/TypeError."""
    from pydicom.dataelem import DataElement

    ds = _ds(small_image, rescale=(2.0, -100.0))
    tag = ds.data_element(keyword).tag
    ds[tag] = DataElement(tag, "LO", value)  # LO: pydicom would refuse to build the bad DS
    r = analysis.analyse(ds)
    assert (r.status, r.reason) == ("error", "unreadable") and keyword in r.message


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEG2000])
def test_compressed_transfer_syntaxes_pydicom(small_image, syntax, tmp_path):
    ds = _ds(small_image, bits_stored=12)
    ref = image_from_dataset(ds).image
    kwargs = {"j2k_cr": [20]} if syntax == JPEG2000 else {}
    ds.compress(syntax, **kwargs)
    path = tmp_path / "c.dcm"
    ds.save_as(path, enforce_file_format=True)
    got = image_from_dataset(pydicom.dcmread(path)).image
    if syntax == JPEG2000:
        assert np.abs(got - ref).mean() < 0.01 * np.ptp(ref)
    else:
        assert np.array_equal(got, ref)


@pytest.mark.skipif(shutil.which("dcmcjpeg") is None, reason="DCMTK dcmcjpeg not installed")
@pytest.mark.parametrize("option, lossless, bits", [("+e1", True, 12), ("+el", True, 12), ("+ee", False, 12),
                                                    ("+eb", False, 8)])
def test_jpeg_transfer_syntaxes_from_dcmtk(small_image, option, lossless, bits, tmp_path):
    ds = _ds(small_image, bits_stored=bits)
    src, dst = tmp_path / "in.dcm", tmp_path / "out.dcm"
    ds.save_as(src, enforce_file_format=True)
    subprocess.run(["dcmcjpeg", option, str(src), str(dst)], check=True, capture_output=True)
    out = pydicom.dcmread(dst)
    assert out.file_meta.TransferSyntaxUID.is_compressed
    ref = image_from_dataset(ds).image
    got = image_from_dataset(out).image
    if lossless:
        assert np.array_equal(got, ref)
    else:
        # Lossy: the same picture up to compression noise (the decoded grey level may be shifted,
        # which the profile fit's free background absorbs).
        assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99


def test_header_laterality_sex_age():
    ds = pydicom.Dataset()
    assert analysis.laterality_from_dataset(ds) is None
    ds.Laterality = "R"
    assert analysis.laterality_from_dataset(ds) == "R"
    ds.ImageLaterality = "L"
    assert analysis.laterality_from_dataset(ds) == "L"
    ds.ImageLaterality = "U"
    ds.Laterality = "B"
    assert analysis.laterality_from_dataset(ds) is None
    ds.PatientSex = "O"
    assert analysis.sex_from_dataset(ds) is None
    ds.PatientSex = "F"
    assert analysis.sex_from_dataset(ds) == "F"
    assert analysis.age_from_dataset(ds) is None
    ds.PatientBirthDate, ds.StudyDate = "19600615", "20260614"
    assert analysis.age_from_dataset(ds) == pytest.approx(66.0, abs=0.01)
    ds.PatientAge = "062Y"
    assert analysis.age_from_dataset(ds) == 62.0
    ds.PatientAge = "018M"
    assert analysis.age_from_dataset(ds) == 1.5


def test_colour_and_multiframe_images_are_refused_not_errors(small_image):
    ds = _ds(small_image)
    rgb = np.repeat((small_image / small_image.max() * 255).astype(np.uint8)[..., None], 3, axis=2)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = rgb.tobytes()
    r = analysis.analyse(ds)
    assert (r.status, r.reason) == ("refused", "not_pa_hand") and "colour" in r.message
    ds = _ds(small_image)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    r = analysis.analyse(ds)
    assert (r.status, r.reason) == ("refused", "not_pa_hand") and "frames" in r.message


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools dciodvfy not installed")
@pytest.mark.parametrize("modality, photometric, spacing", [("CR", "MONOCHROME2", "PixelSpacing"),
                                                            ("CR", "MONOCHROME1", "magnified"),
                                                            ("DX", "MONOCHROME1", "ImagerPixelSpacing")])
def test_phantom_datasets_are_valid_dicom(small_image, tmp_path, modality, photometric, spacing):
    ds = _ds(small_image, modality=modality, photometric=photometric, spacing_attribute=spacing,
             patient_name="Müller^Jürgen", charset="ISO_IR 192", bits_stored=14)
    path = tmp_path / "p.dcm"
    ds.save_as(path, enforce_file_format=True)
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]
    assert errors == []
    assert pydicom.dcmread(path).PatientName == "Müller^Jürgen"


def test_anatomy_spacing_factor_from_metacarpal_lengths():
    """Typical adult lengths give 1; bones 1.5 times too short ask for 1.5 times larger pixels."""
    from analysis.calibration import ADULT_MC3_LENGTH_MM, anatomy_spacing_factor

    typical = {"II": 1.07 * ADULT_MC3_LENGTH_MM, "III": ADULT_MC3_LENGTH_MM, "IV": 0.87 * ADULT_MC3_LENGTH_MM}
    assert anatomy_spacing_factor(typical) == pytest.approx(1.0, abs=0.01)
    short = {n: v / 1.5 for n, v in typical.items()}
    assert anatomy_spacing_factor(short) == pytest.approx(1.5, abs=0.01)
    assert anatomy_spacing_factor({"II": short["II"]}) == pytest.approx(1.5, abs=0.01)  # one bone is enough
    assert anatomy_spacing_factor({}) is None
    assert anatomy_spacing_factor({"III": None, "IV": 0.0}) is None


@pytest.mark.parametrize("told_over_true", [1 / 1.5, 1.5])
def test_pixel_size_contradicted_by_the_hand_omits_scores_with_the_size_that_fits(told_over_true):
    """A phantom hand (MC III 63.5 mm) analysed at a pixel size wrong by x1.5 either way: measured,
    but T- and Z-scores omitted, and the message names a pixel size close to the true one."""
    import re

    from analysis.reference import load_reference_tables

    true_mm = 0.1
    image, _truth = make_hand(3, spacing_mm=true_mm)
    ref = load_reference_tables(["sex,age_min,age_max,mean_g_cm2,sd_g_cm2,kind,source,derived\n"
                                 "F,30,46,0.598,0.034,young_adult,Black 2001,false\n"])
    right = analysis.analyse_image(image, pixel_spacing_mm=true_mm, sex="F", age_years=60.0, reference=ref)
    assert right.status == "ok" and right.t_score is not None
    told = true_mm * told_over_true
    wrong = analysis.analyse_image(image, pixel_spacing_mm=told, sex="F", age_years=60.0, reference=ref)
    assert wrong.status == "ok" and wrong.mci == pytest.approx(right.mci, rel=0.05)  # 2T/W needs no scale
    assert wrong.t_score is None and wrong.z_score is None and wrong.who_category is None
    assert "pixel size looks wrong" in wrong.scores_omitted_reason
    fits_mm = float(re.search(r"about ([0-9.]+) mm would fit", wrong.scores_omitted_reason).group(1))
    assert fits_mm == pytest.approx(true_mm, rel=0.15)
