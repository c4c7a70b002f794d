"""Bone filters on a canonical copy: white top-hat, across-shaft ridge strength, and peaks.

Inputs and outputs are images or profiles in canonical pixels (working pixels, about 0.5 mm);
filter sizes are given in those pixels by the callers, as multiples of the finger spacing ``s``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

RIDGE_SIGMA = 0.12
"""Across-shaft scale of the ridge filter, in s."""


def _tophat(image: np.ndarray, size_px: int) -> np.ndarray:
    """White top-hat with a square: bone above the local soft-tissue floor."""
    size_px = max(3, int(size_px) | 1)
    opened = ndi.maximum_filter(ndi.minimum_filter(image, size_px), size_px)
    return image - opened


def _ridge_x(image: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    """Strength of bright ridges running along the rows' normal (near-vertical bones)."""
    return -ndi.gaussian_filter(image, (sigma_y, sigma_x), order=(0, 2)) * sigma_x**2


def _peaks_1d(profile: np.ndarray, min_height: float) -> np.ndarray:
    """Indices of the local maxima of ``profile`` above ``min_height`` (a plateau gives its first)."""
    p = profile
    idx = np.nonzero((p[1:-1] > p[:-2]) & (p[1:-1] >= p[2:]) & (p[1:-1] > min_height))[0] + 1
    return idx


def _row_peaks(block: np.ndarray, fraction: float) -> np.ndarray:
    """Columns of the local maxima of each row of ``block`` above ``fraction`` of its maximum.

    ``(n_rows, most peaks in a row)``, in increasing column as :func:`_peaks_1d` gives them;
    rows with fewer peaks are padded with +inf.
    """
    p = block
    thresh = fraction * np.maximum(p.max(axis=1), 1e-9)
    is_peak = (p[:, 1:-1] > p[:, :-2]) & (p[:, 1:-1] >= p[:, 2:]) & (p[:, 1:-1] > thresh[:, None])
    r, c = np.nonzero(is_peak)
    c = c + 1
    counts = np.bincount(r, minlength=p.shape[0])
    width = int(counts.max()) if counts.size else 0
    x = np.full((p.shape[0], width), np.inf)
    slot = np.arange(r.size) - np.repeat(np.cumsum(counts) - counts, counts)
    x[r, slot] = c
    return x
