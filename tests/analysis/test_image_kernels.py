"""The whole-image kernels (analysis/image_kernels.py) agree with their plain references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from analysis import image_kernels as K


def _blobs(seed: int, shape=(120, 97), smooth=4.0, level=0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), smooth) > level


@pytest.mark.parametrize(
    "dtype, slope, intercept, invert",
    [
        (np.uint16, 1.0, 0.0, True),
        (np.uint16, 1.0, 0.0, False),
        (np.uint8, 1.0, 0.0, True),
        (np.int16, 0.37, -1024.0, True),
        (np.uint16, -2.5, 7.1, True),
        (np.int32, 1.0, 3.25, False),
    ],
)
def test_stored_to_float_is_bit_identical_to_numpy(dtype, slope, intercept, invert):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(1)
    stored = rng.integers(max(info.min, -5000), min(info.max, 5000), (61, 47)).astype(dtype)
    fast = K.stored_to_float(stored, slope, intercept, invert)
    ref = K.stored_to_float_numpy(stored, slope, intercept, invert)
    assert fast.dtype == np.float64 and fast.flags.c_contiguous
    assert np.array_equal(fast, ref)


def test_stored_to_float_inverts_so_extremes_swap():
    stored = np.array([[0, 10], [100, 4095]], np.uint16)
    out = K.stored_to_float(stored, invert=True)
    assert out[0, 0] == 4095.0 and out[1, 1] == 0.0 and out[0, 1] == 4085.0


def test_stored_to_float_non_integer_input_uses_reference():
    data = np.linspace(-1.0, 3.0, 30).reshape(5, 6).astype(np.float32)
    assert np.array_equal(K.stored_to_float(data, 2.0, 1.0, True), K.stored_to_float_numpy(data, 2.0, 1.0, True))


@pytest.mark.parametrize("factor, shape", [(5, (103, 88)), (4, (64, 64)), (1, (7, 9)), (3, (2, 11))])
def test_block_mean_matches_reshape_mean(factor, shape):
    image = np.random.default_rng(2).normal(500.0, 120.0, shape)
    fast = K.block_mean(image, factor)
    ref = K.block_mean_numpy(image, factor)
    assert fast.shape == ref.shape
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=0)


def test_block_mean_of_a_ramp_is_the_block_centre():
    rows, cols = np.mgrid[0:20, 0:30].astype(float)
    out = K.block_mean(cols, 5)
    np.testing.assert_allclose(out[0], np.arange(6) * 5 + 2.0, rtol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_distance_to_background_equals_scipy(seed):
    mask = _blobs(seed)
    assert np.array_equal(K.distance_to_background(mask), K.distance_to_background_numpy(mask))


def test_distance_to_background_edge_cases():
    one_hole = np.ones((9, 13), bool)
    one_hole[4, 6] = False
    single = np.zeros((5, 5), bool)
    single[0, 0] = True
    line = np.array([[True, True, False, True]])
    for mask in (one_hole, single, line, np.zeros((4, 4), bool), np.ones((4, 4), bool)):
        assert np.array_equal(K.distance_to_background(mask), ndi.distance_transform_edt(mask))
    assert K.distance_to_background(one_hole)[0, 0] == pytest.approx(np.hypot(4, 6))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_cross_morphology_equals_scipy(seed, iterations):
    mask = _blobs(seed, smooth=2.0)
    mask[0, :5] = True  # border pixels: outside the image counts as background
    assert np.array_equal(K.erode_cross(mask, iterations), ndi.binary_erosion(mask, iterations=iterations))
    assert np.array_equal(K.dilate_cross(mask, iterations), ndi.binary_dilation(mask, iterations=iterations))
    assert np.array_equal(K.open_cross(mask), ndi.binary_opening(mask, iterations=1))


@pytest.mark.parametrize("seed", range(5))
def test_trace_boundary_matches_reference(seed):
    mask = _blobs(seed)
    fast = K.trace_boundary(mask)
    assert np.array_equal(fast, K.trace_boundary_numpy(mask))


def test_trace_boundary_of_a_square_walks_its_rim_clockwise():
    mask = np.zeros((6, 6), bool)
    mask[1:4, 2:5] = True
    out = K.trace_boundary(mask)
    assert out[0].tolist() == [1.0, 2.0] and out[1].tolist() == [1.0, 3.0]  # east first: clockwise
    assert len(out) == 8  # the 3 x 3 square's rim
    assert K.trace_boundary(np.zeros((3, 3), bool)).shape == (0, 2)


@pytest.mark.parametrize("case", ["smooth", "normal", "constant", "integers", "single"])
def test_histogram_equals_numpy(case):
    rng = np.random.default_rng(3)
    values = {
        "smooth": ndi.gaussian_filter(rng.random((80, 70)), 2).ravel() * 1.7 - 0.2,
        "normal": rng.normal(size=2000),
        "constant": np.full(10, 3.0),
        "integers": rng.integers(0, 10, 500).astype(float),  # many values exactly on bin edges
        "single": np.array([0.25]),
    }[case]
    counts, edges = K.histogram(values, 256)
    ref_counts, ref_edges = np.histogram(values, 256)
    assert np.array_equal(counts, ref_counts) and np.array_equal(edges, ref_edges)


@pytest.mark.parametrize("mode", ["nearest", "constant"])
@pytest.mark.parametrize("shape", [(40, 33), (1, 6), (6, 1)])
def test_bilinear_equals_map_coordinates(mode, shape):
    rng = np.random.default_rng(4)
    image = rng.normal(100.0, 30.0, shape)
    rows = rng.uniform(-3.0, shape[0] + 2.0, 3000)
    cols = rng.uniform(-3.0, shape[1] + 2.0, 3000)
    rows[:40] = np.round(rows[:40])  # on the grid, on the last row and column, just outside
    cols[40:60] = shape[1] - 1.0
    rows[60:70] = shape[0] - 1.0
    cols[70:80] = -1e-9
    rows[80:85] = np.nan  # NaN coordinates: NaN ('nearest') or cval ('constant'), never a pixel
    cols[83:90] = np.nan
    fast = K.bilinear(image, rows, cols, mode=mode, cval=-7.0)
    ref = K.bilinear_numpy(image, rows, cols, mode=mode, cval=-7.0)
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)
    assert np.array_equal(fast == -7.0, ref == -7.0)


def test_bilinear_keeps_the_coordinate_shape_and_interpolates_a_plane():
    rows, cols = np.mgrid[0:5, 0:7].astype(float)
    plane = 2.0 * rows + 3.0 * cols
    yy, xx = np.array([[0.5, 1.25], [3.75, 2.0]]), np.array([[0.5, 5.5], [1.1, 6.0]])
    out = K.bilinear(plane, yy, xx)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, 2.0 * yy + 3.0 * xx, rtol=1e-12)
    with pytest.raises(ValueError):
        K.bilinear(plane, yy, xx, mode="wrap")


@pytest.mark.parametrize("shape", [(90, 75), (7, 3), (2, 9), (1, 1)])
def test_flat_bright_mask_equals_uniform_filter_version(shape):
    rng = np.random.default_rng(5)
    image = ndi.gaussian_filter(rng.random(shape), 1.0) * 1.5
    image[: max(1, shape[0] // 3)] = 0.9 + 1e-3 * rng.random((max(1, shape[0] // 3), shape[1]))  # a flat band
    fast = K.flat_bright_mask(image, 5, 0.75, 0.03)
    assert np.array_equal(fast, K.flat_bright_mask_numpy(image, 5, 0.75, 0.03))
    if shape[0] >= 7:
        assert fast[: shape[0] // 3 - 2].all()  # the flat band, away from its textured edge


def test_stored_to_float_reads_big_endian_values():
    stored = np.arange(24, dtype=">u2").reshape(4, 6) * 100
    assert np.array_equal(K.stored_to_float(stored, 0.5, 1.0, True), K.stored_to_float_numpy(stored, 0.5, 1.0, True))
