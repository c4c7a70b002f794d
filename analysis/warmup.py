"""Load every numba kernel's compiled code before the first image arrives.

The kernels in :mod:`analysis.kernels` and :mod:`analysis.image_kernels` are compiled with
``cache=True``: the first call of each argument-type signature in a process loads its machine
code from numba's on-disk cache (or compiles it, the first time on a machine). Done inside the
first study that costs about a second; :func:`warm_up` pays it when a worker starts, by calling
each kernel once on tiny arrays of the dtypes, layouts and read-only flags the analysis passes.
"""

from __future__ import annotations

import numpy as np

from analysis import image_kernels, kernels

__all__ = ["warm_up"]

STORED_DTYPES = (np.uint16, np.int16, np.uint8)
"""Decoded pixel dtypes converted by :func:`analysis.image_kernels.stored_to_float`
(unsigned and signed 12-16 bit, 8 bit); others are converted by numpy, not numba."""


def _readonly(a: np.ndarray) -> np.ndarray:
    """``a`` as the read-only view a broadcast gives (numba types read-only arrays separately)."""
    a = a.view()
    a.flags.writeable = False
    return a


def _image_kernels() -> None:
    image = np.linspace(0.0, 1.0, 64).reshape(8, 8)
    for dtype in STORED_DTYPES:
        for invert in (False, True):
            image_kernels.stored_to_float(np.arange(16, dtype=dtype).reshape(4, 4), 2.0, 1.0, invert)
    image_kernels.block_mean(image, 2)
    image_kernels.flat_bright_mask(image, 3, 0.5, 0.1)
    image_kernels.histogram(image, 16)
    points = np.linspace(0.0, 7.0, 5)
    out = np.empty(5)
    for rows in (points, _readonly(points)):  # bilinear passes broadcasts through as read-only views
        for cols in (points, _readonly(points)):
            for constant in (False, True):
                image_kernels._bilinear(image, rows, cols, constant, 0.0, out)
    mask = image > 0.3
    image_kernels.distance_to_background(mask)
    image_kernels.trace_boundary(mask)


def _profile_kernels() -> None:
    offsets = np.linspace(-10.0, 10.0, 21)
    image = np.ones((32, 32))
    centre = np.array([[16.0, 16.0]])
    normal, tangent = np.array([0.0, 1.0]), np.array([1.0, 0.0])
    kernels.sample_profiles(image, centre, normal, tangent, offsets, 3, 1.0)
    profile = 1.0 + np.exp(-offsets**2 / 20.0)
    p0 = np.zeros(kernels.N_PARAMS)
    p0[:11] = 0.0, 6.0, 3.0, 0.0, 1.0, 1.0, 0.0, 0.1, 0.05, 0.0, 4.0  # no enhancement, no display bend
    free = np.ones(kernels.N_PARAMS, dtype=np.bool_)
    free[9] = free[10] = False
    kernels.fit_one_profile(offsets, profile, p0, free, 2, kernels._GL_X, kernels._GL_W)
    kernels.fit_profiles(offsets, np.tile(profile, (2, 1)), np.tile(p0, (2, 1)), free, 2)
    kernels.profile_model(offsets, p0, kernels._GL_X, kernels._GL_W, False)  # measure._bend_shows


def warm_up() -> None:
    """Call every numba kernel once on tiny arrays (a few ms once loaded; results discarded)."""
    _image_kernels()
    _profile_kernels()
