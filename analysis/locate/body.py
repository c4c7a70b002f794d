"""Stage 1: the working copy, its unexposed bands, the background surface and the body mask.

Takes the full-resolution image (bone bright, any scale) and its pixel size in mm; gives a
:class:`_Work`: a block-mean copy at about WORK_SPACING_MM per pixel, background-flattened, with
the collimator bands and the largest piece of tissue (the body part) as masks. Burned-in markers
and logos are small separate pieces and drop out of the body mask.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from analysis.image_kernels import (
    block_mean,
    dilate_cross,
    distance_to_background,
    flat_bright_mask,
    histogram,
    open_cross,
    trace_boundary,
)
from analysis.locate.fingers import HAND_SCALES
from analysis.locate.location import HandLocation, _refuse

WORK_SPACING_MM = 0.5
"""Pixel size of the working copy the search runs on (mm)."""
BAND_EDGE_MM = 3.0
"""How far the unexposed-band mask is grown into the field (mm), over the band's blurred edge."""
BONE_TISSUE_MARGIN_MM = 3.0
"""Soft tissue assumed around each bone where none shows (mm): about a finger's."""
SOFT_TISSUE_SHOWS_SHARE = 0.68
"""Share of the grown body (:func:`_bones_fleshed_out`) that the tissue found must cover for the
soft tissue to count as visible. FracAtlas development films: 1st percentile 0.71, median 0.85
(6 of 702 below 0.68); phantoms whose soft tissue a sigmoid display crushes: 0.60-0.64."""
MIN_HAND_AREA_MM2 = 1500.0
"""Smallest body part (at the nominal hand size, mm²) that can hold a hand."""


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Block mean over ``factor`` x ``factor`` pixels (edges trimmed); one streaming pass over
    the full-resolution image (numba), the only one the working copy needs."""
    return block_mean(image, factor)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = histogram(values, bins)  # numpy.histogram's counts, one pass (numba)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    return float(centres[np.argmax(w0 * w1 * (mu0 - mu1) ** 2)])


def _unexposed_bands(g: np.ndarray, spacing_mm: float = WORK_SPACING_MM) -> np.ndarray:
    """Bright, flat regions lying along a long stretch of the image border (collimator shadow).

    Bone that runs out of the field (the radius at the top of a hand film) also touches the
    border, but only over its own width; a band touches it over a large part of one side.
    """
    # Flat: low local spread. Cortical bone is bright but textured, so a radius running into
    # the band does not connect to it through flat pixels.
    lab, _ = ndi.label(flat_bright_mask(g, 5, 0.75, 0.03))
    bands = np.zeros(g.shape, bool)
    sides = (lab[0], lab[-1], lab[:, 0], lab[:, -1])
    for side in sides:
        ids, counts = np.unique(side[side > 0], return_counts=True)
        for k, n in zip(ids, counts):
            if n >= 0.25 * side.size:
                bands |= lab == k
    if not bands.any():
        return bands
    # The band's edge is a blurred ramp (the collimator penumbra, the detector and the working
    # copy's smoothing): left in, its inner fringe reads as tissue, rings the whole field and the
    # hole filling then takes every pixel of air inside it for body.
    return dilate_cross(bands, iterations=max(3, int(round(BAND_EDGE_MM / spacing_mm))))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes: background pieces that do not reach the image border (labelling, not the
    iterated dilation of ``ndi.binary_fill_holes``, which is slow on large masks)."""
    lab, n = ndi.label(~mask)
    if n == 0:
        return mask
    touches_border = np.zeros(n + 1, bool)  # per label (a lookup table: faster than np.isin)
    touches_border[np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])] = True
    touches_border[0] = False  # label 0 is the mask itself
    return ~touches_border[lab]


def _background_surface(g: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Quadratic surface fitted to background pixels (exposure gradients, heel effect)."""
    rows, cols = np.nonzero(background)
    if rows.size < 100:
        return np.full(g.shape, float(np.median(g)))
    step = max(1, rows.size // 5000)
    r = rows[::step] / g.shape[0] - 0.5
    c = cols[::step] / g.shape[1] - 0.5
    design = np.stack([np.ones_like(r), r, c, r * r, r * c, c * c], axis=1)
    values = g[rows[::step], cols[::step]]
    keep = np.ones(values.size, bool)
    for _ in range(3):  # trimmed least squares: tissue fringes left in the background drop out
        coef, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        resid = values - design @ coef
        mad = np.median(np.abs(resid[keep])) + 1e-9
        keep = np.abs(resid) < 3.0 * 1.4826 * mad
    rr = np.arange(g.shape[0]) / g.shape[0] - 0.5
    cc = np.arange(g.shape[1]) / g.shape[1] - 0.5
    # c0 + c1 r + c2 c + c3 r^2 + c4 r c + c5 c^2, summed left to right as written, with the
    # one-dimensional terms formed first: five passes over the grid instead of eleven.
    surface = np.add.outer(coef[0] + coef[1] * rr, coef[2] * cc)
    surface += ((coef[3] * rr) * rr)[:, None]
    surface += np.multiply.outer(coef[4] * rr, cc)
    surface += ((coef[5] * cc) * cc)[None, :]
    return surface


@dataclass
class _Work:
    """The working copy and what step 1 found on it."""

    g: np.ndarray  # normalised image, 0 = background, ~1 = brightest bone
    spacing_mm: float
    factor: int
    bands: np.ndarray
    body: np.ndarray  # largest tissue component, holes filled
    tissue_level: float  # median of soft tissue above background (normalised units)
    tissue: np.ndarray  # every piece of tissue (the body is the largest)


def _work_factor(pixel_spacing_mm: float) -> int:
    """Block size (pixels) that brings ``pixel_spacing_mm`` to about WORK_SPACING_MM."""
    return max(1, int(round(min(WORK_SPACING_MM / pixel_spacing_mm, 1e9))))  # min: 1e-320 mm gives inf


def _prepare(image: np.ndarray, pixel_spacing_mm: float) -> _Work:
    """Stage 1: the working copy of ``image`` (pixel size ``pixel_spacing_mm``, mm) and its masks.

    Returns a :class:`_Work` at ``factor * pixel_spacing_mm`` (about WORK_SPACING_MM) per pixel:
    ``g`` the background-flattened image (0 = background, bone about 1), ``bands`` the unexposed
    borders, ``body`` the largest piece of tissue with its holes filled, ``tissue_level`` the
    median soft-tissue level (units of ``g``).
    """
    factor = _work_factor(pixel_spacing_mm)
    work = _downsample(image, factor)
    spacing = pixel_spacing_mm * factor
    finite = np.isfinite(work)
    if not finite.all():
        work = np.where(finite, work, np.nanmin(work[finite]) if finite.any() else 0.0)
    smooth = ndi.gaussian_filter(work, 0.6 / spacing)
    lo, hi = np.percentile(smooth, [1.0, 99.9])
    g = (smooth - lo) / max(hi - lo, 1e-12)
    bands = _unexposed_bands(g, spacing)
    if bands.any() and not bands.all():
        # Scale to the exposed field alone: saturated bands at the top of the range would squeeze
        # faint soft tissue under the tissue threshold.
        lo, hi = np.percentile(smooth[~bands], [1.0, 99.9])
        g = (smooth - lo) / max(hi - lo, 1e-12)
    valid = g[~bands]
    t_bone = _otsu(valid)
    t_tissue = _otsu(valid[valid < t_bone]) if np.count_nonzero(valid < t_bone) > 100 else 0.5 * t_bone
    surface = _background_surface(g, (g < t_tissue) & ~bands)
    resid = g - surface
    rv = resid[~bands]
    # valid is g[~bands]; np.abs gives a fresh array, so the median may partition it in place.
    background = np.abs(rv[valid < t_tissue])
    noise = (1.4826 * float(np.median(background, overwrite_input=True)) if background.size else 0.0) + 1e-6
    # Tissue: clearly above the local background (Otsu of the residual, but never within noise).
    t_body = max(8.0 * noise, 0.025)
    tissue = (resid > t_body) & ~bands
    tissue = open_cross(tissue)
    body = _largest_piece(tissue)
    g = resid  # background-flattened image from here on
    soft = g[body & (g < t_bone)]
    tissue_level = float(np.median(soft, overwrite_input=True)) if soft.size else t_body
    return _Work(g=g, spacing_mm=spacing, factor=factor, bands=bands, body=body, tissue_level=tissue_level,
                 tissue=tissue)


def _largest_piece(mask: np.ndarray) -> np.ndarray:
    """The largest connected piece of ``mask`` with its holes filled (``mask`` itself when empty)."""
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]  # pixels per piece
    return _fill_holes(lab == (1 + int(np.argmax(sizes))))


def _bones_fleshed_out(w: _Work) -> _Work | None:
    """The working copy with the body a film whose soft tissue does not show would have, or None
    when the soft tissue does show.

    Every piece of tissue is grown by BONE_TISSUE_MARGIN_MM (bridging joint spaces, giving the
    fingers their width) and the largest piece, holes filled, is the body. When the tissue found
    covers at least SOFT_TISSUE_SHOWS_SHARE of that body, the soft tissue showed (the growth only
    added a rim): None. The second hypothesis for a display curve that crushes the dark end or a
    very faint exposure, where the tissue mask holds little more than the bones.
    """
    grown = (distance_to_background(~w.tissue) <= BONE_TISSUE_MARGIN_MM / w.spacing_mm) & ~w.bands
    if not grown.any():
        return None
    body = _largest_piece(grown)
    if np.count_nonzero(w.tissue & body) >= SOFT_TISSUE_SHOWS_SHARE * np.count_nonzero(body):
        return None
    return dataclasses.replace(w, body=body)


def _work_index(image_px: float, factor: int) -> int:
    """Index of the working pixel (block) that holds image pixel coordinate ``image_px`` (one axis);
    the inverse of :func:`analysis.locate.frame._to_image_rc` (``round(image_px / factor)`` was half a block off)."""
    return int(math.floor((image_px + 0.5) / factor))


def _trace_boundary(mask: np.ndarray) -> np.ndarray:
    """Outer boundary of the largest blob, in order (Moore-neighbour tracing), ``(row, col)``."""
    return trace_boundary(mask)


def _outline(body: np.ndarray, factor: int, n_max: int = 400) -> np.ndarray:
    """Boundary of the body mask as an ordered polygon, in image pixels ``(row, col)``."""
    pts = _trace_boundary(body)
    if pts.shape[0] == 0:
        return pts
    step = max(1, pts.shape[0] // n_max)
    pts = pts[::step]
    return pts * factor + 0.5 * (factor - 1)


def _unusable_input(image: np.ndarray, pixel_spacing_mm: float) -> HandLocation | None:
    """Refusal for an input no hand can be found in, else None.

    ``image``: the float image ``(rows, cols)``; ``pixel_spacing_mm``: its pixel size (mm). Not a
    2-D image, under 16 pixels a side, a non-finite or non-positive spacing, or a working copy
    under 16 pixels a side (the image spans a few mm): ``not_pa_hand``.
    """
    if image.ndim != 2 or min(image.shape) < 16 or not np.isfinite(pixel_spacing_mm) or pixel_spacing_mm <= 0:
        return _refuse("not_pa_hand", "The image is not a single-frame greyscale radiograph.")
    if min(image.shape) // _work_factor(pixel_spacing_mm) < 16:
        # The working copy would be (nearly) empty: the image spans a few mm, no hand fits.
        side_mm = min(image.shape) * pixel_spacing_mm
        return _refuse("not_pa_hand", f"The image is only {side_mm:.3g} mm across; too small to hold a hand.")
    return None


def _body_too_small(w: _Work, details: dict) -> bool:
    """True when the body mask (``w.body``, working pixels) is under MIN_HAND_AREA_MM2 (mm²) at the
    smallest hand scale tried (:data:`analysis.locate.fingers.HAND_SCALES`); records
    ``details["body_area_cm2"]``."""
    body_area_mm2 = float(w.body.sum()) * w.spacing_mm**2
    details["body_area_cm2"] = round(body_area_mm2 / 100.0, 1)
    return body_area_mm2 < MIN_HAND_AREA_MM2 * min(HAND_SCALES) ** 2
