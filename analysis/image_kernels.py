"""Whole-image numba kernels for calibration and the hand finder, each beside its plain reference.

These are the passes over a full-resolution radiograph (2500 x 3000 px and more) or over the
hand finder's working copy whose numpy/scipy versions cost tens of milliseconds: numpy builds a
temporary per operation, and a fresh 60 MB float64 temporary costs page faults on top of the
arithmetic. Each kernel does its job in one or two streaming passes and gives the same numbers
as its reference (``*_numpy``; the tests compare them):

* :func:`stored_to_float` - stored pixel values to float64 with the Modality LUT's slope and
  intercept applied and MONOCHROME1 inverted, in one pass (bit-identical to the numpy steps).
* :func:`block_mean` - ``factor x factor`` block mean (the hand finder's working copy).
* :func:`distance_to_background` - exact Euclidean distance transform (Felzenszwalb and
  Huttenlocher's lower envelope of parabolas), equal to ``scipy.ndimage.distance_transform_edt``.
* :func:`trace_boundary` - ordered outer boundary of a mask (Moore-neighbour tracing).
* :func:`histogram` - ``numpy.histogram`` with equal bins, in one pass (same counts and edges).
* :func:`flat_bright_mask` - bright pixels with a small local spread (collimator shadow),
  computed only at the bright pixels.
* :func:`bilinear` - bilinear interpolation at arbitrary points (``map_coordinates`` with
  ``order=1``, to rounding), for the hand finder's canonical frame and its band profiles.

Cross-shaped (4-connected) binary erosion and dilation are plain numpy slicing
(:func:`erode_cross`, :func:`dilate_cross`): several times faster than scipy's generic
structuring-element code and equal to ``scipy.ndimage.binary_erosion/dilation`` with the
default structure and ``border_value=0``.

Arrays are ``(row, col)``.
"""

from __future__ import annotations

import numba
import numpy as np

# ----------------------------------------------------------------------------- calibration


@numba.njit(cache=True)
def _stored_to_float(flat_in, out, slope, intercept, scale, shift, invert, total):
    for i in range(out.size):
        # The numpy reference's operations in its order, so the same rounding (the branches
        # are loop-invariant; LLVM hoists them).
        v = np.float64(flat_in[i])
        if scale:
            v = v * slope
        if shift:
            v = v + intercept
        if invert:
            v = total - v
        out[i] = v


def stored_to_float(stored: np.ndarray, slope: float = 1.0, intercept: float = 0.0,
                    invert: bool = False) -> np.ndarray:
    """Stored integer pixel values to float64 ``stored * slope + intercept``, inverted on request.

    Parameters
    ----------
    stored : integer ndarray (rows, cols)
        Decoded pixel data (any integer dtype).
    slope, intercept : float
        Modality LUT rescale (output units per stored unit, output units).
    invert : bool
        MONOCHROME1: return ``max + min - value`` so that bone is bright (max and min of the
        rescaled image).

    Returns
    -------
    float64 ndarray (rows, cols), C-contiguous
        Equal, bit for bit, to :func:`stored_to_float_numpy`.
    """
    stored = np.ascontiguousarray(stored)
    if stored.dtype.kind not in "iu":
        return stored_to_float_numpy(stored, slope, intercept, invert)
    if not stored.dtype.isnative:  # numba reads native byte order only
        stored = stored.astype(stored.dtype.newbyteorder("="))
    slope, intercept = float(slope), float(intercept)
    scale, shift = slope != 1.0, intercept != 0.0
    total = 0.0
    if invert and stored.size:
        # Rounding is monotone, so the rescaled extremes are the rescaled stored extremes
        # (swapped for a negative slope): one pass over the small integer array, none over
        # the float image.
        lo_hi = [float(stored.min()), float(stored.max())]
        ends = []
        for v in lo_hi:
            if scale:
                v = v * slope
            if shift:
                v = v + intercept
            ends.append(v)
        total = max(ends) + min(ends)
    # numpy allocates the output: its large allocations use transparent huge pages, numba's
    # do not (a 60 MB image costs 30 ms of page faults through numba's allocator).
    out = np.empty(stored.shape, dtype=np.float64)
    _stored_to_float(stored.reshape(-1), out.reshape(-1), slope, intercept, scale, shift, bool(invert), total)
    return out


def stored_to_float_numpy(stored: np.ndarray, slope: float = 1.0, intercept: float = 0.0,
                          invert: bool = False) -> np.ndarray:
    """Plain-numpy reference for :func:`stored_to_float` (the steps it replaces)."""
    image = np.asarray(stored).astype(np.float64)
    if float(slope) != 1.0:
        image *= float(slope)
    if float(intercept) != 0.0:
        image += float(intercept)
    if invert:
        np.subtract(image.max() + image.min(), image, out=image)
    return np.ascontiguousarray(image)


# ----------------------------------------------------------------------------- working copy


@numba.njit(cache=True)
def _block_mean(image, factor):
    rows = image.shape[0] // factor
    cols = image.shape[1] // factor
    out = np.zeros((rows, cols))
    for r in range(rows * factor):
        i = r // factor
        for j in range(cols):
            acc = 0.0
            c0 = j * factor
            for k in range(factor):
                acc += image[r, c0 + k]
            out[i, j] += acc
    inv = 1.0 / (factor * factor)
    for i in range(rows):
        for j in range(cols):
            out[i, j] *= inv
    return out


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` pixel blocks (a trailing partial block is dropped).

    Parameters
    ----------
    image : ndarray (rows, cols)
        Any real dtype (converted to float64).
    factor : int
        Block side (px); 1 returns a float64 copy.

    Returns
    -------
    float64 ndarray (rows // factor, cols // factor)
        Equal to :func:`block_mean_numpy` to rounding (about 1e-15 relative).
    """
    image = np.ascontiguousarray(image, dtype=np.float64)
    factor = int(factor)
    if factor <= 1:
        return image.copy()
    return _block_mean(image, factor)


def block_mean_numpy(image: np.ndarray, factor: int) -> np.ndarray:
    """Plain-numpy reference for :func:`block_mean` (reshape and mean)."""
    image = np.asarray(image, dtype=np.float64)
    if factor <= 1:
        return image.copy()
    h = image.shape[0] // factor * factor
    w = image.shape[1] // factor * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


@numba.njit(cache=True)
def _flat_bright(image, half, min_level, max_spread, out):
    rows, cols = image.shape
    n = (2 * half + 1) ** 2
    for r in range(rows):
        for c in range(cols):
            if not image[r, c] > min_level:
                out[r, c] = False
                continue
            # Box sums with 'reflect' borders (d c b a | a b c d), only where the level passes.
            total = 0.0
            total_sq = 0.0
            for dr in range(-half, half + 1):
                rr = r + dr
                if rr < 0:
                    rr = -rr - 1
                elif rr >= rows:
                    rr = 2 * rows - rr - 1
                rr = min(max(rr, 0), rows - 1)  # images thinner than the box
                for dc in range(-half, half + 1):
                    cc = c + dc
                    if cc < 0:
                        cc = -cc - 1
                    elif cc >= cols:
                        cc = 2 * cols - cc - 1
                    cc = min(max(cc, 0), cols - 1)
                    v = image[rr, cc]
                    total += v
                    total_sq += v * v
            mean = total / n
            spread = np.sqrt(max(total_sq / n - mean * mean, 0.0))
            out[r, c] = spread < max_spread


def flat_bright_mask(image: np.ndarray, size: int, min_level: float, max_spread: float) -> np.ndarray:
    """Pixels brighter than ``min_level`` whose local standard deviation is below ``max_spread``.

    The local standard deviation is ``sqrt(max(mean(g^2) - mean(g)^2, 0))`` over a
    ``size x size`` box ('reflect' borders), computed only where the level test passes.
    :func:`flat_bright_mask_numpy` computes it everywhere with ``scipy.ndimage.uniform_filter``;
    the two agree to rounding (about 1e-15), so the masks agree except for a pixel whose spread
    lies within rounding of ``max_spread``.

    Parameters
    ----------
    image : float ndarray (rows, cols)
        Normalised intensities (unitless).
    size : int
        Box side (px), odd.
    min_level, max_spread : float
        Thresholds in the units of ``image``.
    """
    if int(size) % 2 != 1:
        raise ValueError("size must be odd")
    image = np.ascontiguousarray(image, dtype=np.float64)
    out = np.empty(image.shape, dtype=bool)
    if image.size:
        _flat_bright(image, int(size) // 2, float(min_level), float(max_spread), out)
    return out


def flat_bright_mask_numpy(image: np.ndarray, size: int, min_level: float, max_spread: float) -> np.ndarray:
    """Reference for :func:`flat_bright_mask` (scipy's uniform filter and numpy)."""
    from scipy import ndimage as ndi

    image = np.asarray(image, dtype=np.float64)
    mean = ndi.uniform_filter(image, size)
    spread = np.sqrt(np.maximum(ndi.uniform_filter(image * image, size) - mean * mean, 0.0))
    return (image > min_level) & (spread < max_spread)


@numba.njit(cache=True)
def _histogram_uniform(values, first, denom, edges, counts):
    bins = counts.size
    for x in values:
        # numpy.histogram's equal-bin path: scaled index, then a correction against the edges.
        idx = int(((x - first) / denom) * bins)
        if idx == bins:
            idx -= 1
        if x < edges[idx]:
            idx -= 1
        if x >= edges[idx + 1] and idx != bins - 1:
            idx += 1
        counts[idx] += 1


def histogram(values: np.ndarray, bins: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``numpy.histogram(values, bins)`` (equal bins over the data's range), in one pass.

    Returns the same ``(counts, edges)``: the bin edges come from numpy and every value is
    binned by numpy's own rule. Non-finite data go to :func:`numpy.histogram` (which raises).
    """
    values = np.ascontiguousarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return np.histogram(values, bins)
    first, last = values.min(), values.max()
    if not (np.isfinite(first) and np.isfinite(last)):
        return np.histogram(values, bins)
    if first == last:
        first, last = first - 0.5, last + 0.5
    edges = np.linspace(first, last, int(bins) + 1, endpoint=True)
    counts = np.zeros(int(bins), dtype=np.int64)
    _histogram_uniform(values, float(first), float(last - first), edges, counts)
    return counts, edges


# ----------------------------------------------------------------------------- interpolation


@numba.njit(cache=True)
def _bilinear(image, rows, cols, outside_constant, cval, out):
    n_r, n_c = image.shape
    for i in range(rows.size):
        r = rows[i]
        c = cols[i]
        if outside_constant:
            if not (0.0 <= r <= n_r - 1 and 0.0 <= c <= n_c - 1):  # also NaN
                out[i] = cval
                continue
        else:  # 'nearest': the edge value continues outwards
            if r != r or c != c:  # NaN, as scipy gives; int(NaN) below would index anywhere
                out[i] = np.nan
                continue
            r = min(max(r, 0.0), n_r - 1.0)
            c = min(max(c, 0.0), n_c - 1.0)
        r0 = min(int(r), max(n_r - 2, 0))
        c0 = min(int(c), max(n_c - 2, 0))
        r1 = min(r0 + 1, n_r - 1)
        c1 = min(c0 + 1, n_c - 1)
        fr = r - r0
        fc = c - c0
        out[i] = ((1.0 - fr) * ((1.0 - fc) * image[r0, c0] + fc * image[r0, c1])
                  + fr * ((1.0 - fc) * image[r1, c0] + fc * image[r1, c1]))


def bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, mode: str = "nearest",
             cval: float = 0.0) -> np.ndarray:
    """Bilinear interpolation of ``image`` at ``(rows, cols)`` (pixel coordinates, any shape).

    ``mode`` ``"nearest"`` continues the edge values outwards; ``"constant"`` gives ``cval``
    outside ``[0, n - 1]`` on either axis. Equal, to rounding (about 1e-15 relative), to
    ``scipy.ndimage.map_coordinates(image, [rows, cols], order=1, mode=mode, cval=cval)``
    (:func:`bilinear_numpy`), without its per-call set-up.
    """
    if mode not in ("nearest", "constant"):
        raise ValueError(f"mode {mode!r} is not 'nearest' or 'constant'")
    image = np.ascontiguousarray(image, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.float64)
    shape = np.broadcast_shapes(rows.shape, cols.shape)
    rr = np.ascontiguousarray(np.broadcast_to(rows, shape)).ravel()
    cc = np.ascontiguousarray(np.broadcast_to(cols, shape)).ravel()
    out = np.empty(rr.size)
    if image.size == 0:
        out[:] = cval
        return out.reshape(shape)
    _bilinear(image, rr, cc, mode == "constant", float(cval), out)
    return out.reshape(shape)


def bilinear_numpy(image: np.ndarray, rows: np.ndarray, cols: np.ndarray, mode: str = "nearest",
                   cval: float = 0.0) -> np.ndarray:
    """Reference for :func:`bilinear`: ``scipy.ndimage.map_coordinates`` with ``order=1``."""
    from scipy import ndimage as ndi

    rows, cols = np.broadcast_arrays(np.asarray(rows, float), np.asarray(cols, float))
    return ndi.map_coordinates(np.asarray(image, dtype=np.float64), [rows, cols], order=1, mode=mode, cval=cval)


# ----------------------------------------------------------------------------- distance transform


@numba.njit(cache=True)
def _envelope_1d(f, n, out, v, z):
    """Squared distance transform of one line ``f`` (np.inf = no site): lower envelope of
    parabolas (Felzenszwalb & Huttenlocher 2012). Squared distances are integers, exact in float64."""
    k = -1
    for q in range(n):
        if f[q] == np.inf:
            continue
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -np.inf
            z[1] = np.inf
            continue
        while True:
            p = v[k]
            s = ((f[q] + q * q) - (f[p] + p * p)) / (2.0 * q - 2.0 * p)
            if s <= z[k] and k > 0:
                k -= 1
                continue
            if s <= z[k]:  # k == 0: the new parabola is lower everywhere
                v[0] = q
                z[0] = -np.inf
                z[1] = np.inf
                break
            k += 1
            v[k] = q
            z[k] = s
            z[k + 1] = np.inf
            break
    if k < 0:
        for q in range(n):
            out[q] = np.inf
        return
    j = 0
    for q in range(n):
        while z[j + 1] < q:
            j += 1
        d = q - v[j]
        out[q] = d * d + f[v[j]]


@numba.njit(cache=True)
def _squared_edt(mask):
    rows, cols = mask.shape
    n = max(rows, cols)
    f = np.empty(n)
    line = np.empty(n)
    v = np.empty(n, dtype=np.int64)
    z = np.empty(n + 1)
    d2 = np.empty((rows, cols))
    for c in range(cols):
        for r in range(rows):
            f[r] = np.inf if mask[r, c] else 0.0
        _envelope_1d(f, rows, line, v, z)
        for r in range(rows):
            d2[r, c] = line[r]
    for r in range(rows):
        for c in range(cols):
            f[c] = d2[r, c]
        _envelope_1d(f, cols, line, v, z)
        for c in range(cols):
            d2[r, c] = line[c]
    return d2


def distance_to_background(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) from each True pixel to the nearest False pixel; 0 on False.

    Equal to ``scipy.ndimage.distance_transform_edt(mask)`` (both exact: the square root of an
    integer squared distance). A mask without any False pixel is passed to scipy (its
    convention for that case).
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    if mask.all():
        from scipy import ndimage as ndi

        return ndi.distance_transform_edt(mask)
    return np.sqrt(_squared_edt(mask))


def distance_to_background_numpy(mask: np.ndarray) -> np.ndarray:
    """Reference for :func:`distance_to_background`: ``scipy.ndimage.distance_transform_edt``."""
    from scipy import ndimage as ndi

    return ndi.distance_transform_edt(np.asarray(mask, dtype=bool))


# ----------------------------------------------------------------------------- binary morphology


def erode_cross(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Binary erosion with the 4-connected cross, outside the image counted as False.

    Equal to ``scipy.ndimage.binary_erosion(mask, iterations=iterations)``.
    """
    out = np.asarray(mask, dtype=bool)
    for _ in range(int(iterations)):
        src = out
        out = src.copy()
        out[1:, :] &= src[:-1, :]
        out[:-1, :] &= src[1:, :]
        out[:, 1:] &= src[:, :-1]
        out[:, :-1] &= src[:, 1:]
        out[0, :] = False
        out[-1, :] = False
        out[:, 0] = False
        out[:, -1] = False
    return out


def dilate_cross(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Binary dilation with the 4-connected cross (nothing dilates in from outside the image).

    Equal to ``scipy.ndimage.binary_dilation(mask, iterations=iterations)``.
    """
    out = np.asarray(mask, dtype=bool)
    for _ in range(int(iterations)):
        src = out
        out = src.copy()
        out[1:, :] |= src[:-1, :]
        out[:-1, :] |= src[1:, :]
        out[:, 1:] |= src[:, :-1]
        out[:, :-1] |= src[:, 1:]
    return out


def open_cross(mask: np.ndarray) -> np.ndarray:
    """Binary opening (one erosion, one dilation) with the 4-connected cross.

    Equal to ``scipy.ndimage.binary_opening(mask, iterations=1)``.
    """
    return dilate_cross(erode_cross(mask))


# ----------------------------------------------------------------------------- boundary tracing

_NEIGHBOURS = np.array([(0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1)], dtype=np.int64)
"""8 neighbours ``(d_row, d_col)`` clockwise starting west."""


@numba.njit(cache=True)
def _trace(padded, start_r, start_c, max_steps, nbr):
    out = np.empty((max_steps + 1, 2), dtype=np.int64)
    out[0, 0] = start_r
    out[0, 1] = start_c
    n = 1
    cur_r, cur_c = start_r, start_c
    back = 0  # the direction we came from (west of the start is background)
    for _ in range(max_steps):
        found = False
        for step in range(8):
            d = (back + 1 + step) % 8
            r = cur_r + nbr[d, 0]
            c = cur_c + nbr[d, 1]
            if padded[r, c]:
                back = (d + 4) % 8
                cur_r, cur_c = r, c
                found = True
                break
        if not found or (cur_r == start_r and cur_c == start_c):
            break
        out[n, 0] = cur_r
        out[n, 1] = cur_c
        n += 1
    return out[:n]


def _max_steps(mask: np.ndarray) -> int:
    return 4 * int(mask.size ** 0.5) * 8 + 16


def trace_boundary(mask: np.ndarray) -> np.ndarray:
    """Outer boundary of the blob holding the top-most (then left-most) True pixel, in order.

    Moore-neighbour tracing, clockwise from that pixel; ``(N, 2)`` float ``(row, col)``
    (empty for an empty mask). Equal to :func:`trace_boundary_numpy`.
    """
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    flat = np.flatnonzero(padded)  # row-major: the first is top-most, then left-most
    if flat.size == 0:
        return np.zeros((0, 2))
    start_r, start_c = divmod(int(flat[0]), padded.shape[1])
    contour = _trace(padded, start_r, start_c, _max_steps(mask), _NEIGHBOURS)
    return contour.astype(float) - 1.0


def trace_boundary_numpy(mask: np.ndarray) -> np.ndarray:
    """Plain-Python reference for :func:`trace_boundary`."""
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    rows, cols = np.nonzero(padded)
    if rows.size == 0:
        return np.zeros((0, 2))
    k = int(np.lexsort((cols, rows))[0])  # top-most, then left-most pixel
    start = (int(rows[k]), int(cols[k]))
    nbr = [tuple(int(x) for x in d) for d in _NEIGHBOURS]
    contour = [start]
    cur = start
    back = 0
    for _ in range(_max_steps(mask)):
        found = False
        for step in range(8):
            d = (back + 1 + step) % 8
            r, c = cur[0] + nbr[d][0], cur[1] + nbr[d][1]
            if padded[r, c]:
                back = (d + 4) % 8
                cur = (r, c)
                found = True
                break
        if not found or cur == start:
            break
        contour.append(cur)
    return np.array(contour, dtype=float) - 1.0
