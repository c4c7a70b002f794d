"""Find the hand, its view, and the axes of metacarpals I-V on a hand radiograph.

The search runs on a downsampled copy (about 0.5 mm per pixel) and maps its answer back to
the pixels of the image it was given. Steps:

1. Unexposed (collimated) bands along the edges are masked out, the background level is
   modelled as a smooth surface and everything clearly above it is tissue; the largest
   connected piece of tissue is the body part (burned-in markers and logos are small, separate
   pieces and drop out).
2. Fingers are the parts of the body mask that a morphological opening with a disk wider than
   a finger removes. The hand's axis points from the palm to the fingers, so any in-plane
   rotation is undone by rotating the working copy until the fingers point up.
3. The thumb is the finger whose base is furthest from the others (it leaves the hand from the
   side, proximal to the other four); metacarpals are numbered I-V from it, so a mirrored image
   never changes which bone is II.
4. In a canonical frame (fingers up, thumb to the right) the shafts of II-V are straight lines
   fitted to the peaks of a ridge filter, seeded where each finger points and re-centred on
   the bone signal (the ridge of a hollow tube can lock onto one cortex).
5. Along each line, on the full-resolution image, joint spaces are narrow dark bands between
   bright subchondral plates (a second-derivative filter at about 0.4 mm). The head is the first
   strong one distal to mid-shaft (the MCP joint). The bases of II-V are placed at one common
   hand scale: the scale whose predicted bases fall on carpometacarpal joint lines of all the
   bones best (the first such line, not the midcarpal one behind it).
6. Checks: an unossified carpus (a young child), shafts that overlap (oblique), bones cut by
   the field edge, metal over a shaft (``analysis.qc``; that bone alone is refused).

Refusals (``lateral_view``, ``oblique_view``, ``not_pa_hand``, ``immature_skeleton``,
``bone_not_found``) come from what these steps find: see :func:`locate_hand`.

Coordinates inside this module are ``(row, col)``; :mod:`analysis.result` uses ``(column, row)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from analysis.image_kernels import (
    bilinear,
    block_mean,
    dilate_cross,
    distance_to_background,
    flat_bright_mask,
    histogram,
    open_cross,
    trace_boundary,
)
from analysis.qc import has_foreign_object
from analysis.result import REASON_MESSAGES

METACARPAL_NAMES: tuple[str, ...] = ("I", "II", "III", "IV", "V")

WORK_SPACING_MM = 0.5
"""Pixel size of the working copy the search runs on (mm)."""


@dataclass
class MetacarpalAxis:
    """The shaft axis of one metacarpal, in pixels of the analysed image ``(row, col)``."""

    name: str
    base_rc: tuple[float, float]
    """Proximal end (carpometacarpal joint), ``(row, col)`` pixels."""
    head_rc: tuple[float, float]
    """Distal end (metacarpophalangeal joint), ``(row, col)`` pixels."""
    length_mm: float
    """L: base-to-head distance (mm)."""
    width_mm: float | None = None
    """Rough outer width of the shaft at mid-length from the location step (mm); measure.py
    measures it properly."""
    confidence: float = 1.0
    """0..1: how clearly the shaft ridge was traced (1 = clean, straight, well separated)."""

    @property
    def mid_rc(self) -> tuple[float, float]:
        return (0.5 * (self.base_rc[0] + self.head_rc[0]), 0.5 * (self.base_rc[1] + self.head_rc[1]))

    def axis_px(self) -> list[tuple[float, float]]:
        """Base and head as ``(column, row)`` points, for :class:`analysis.result.AnalysisResult`."""
        return [(self.base_rc[1], self.base_rc[0]), (self.head_rc[1], self.head_rc[0])]


@dataclass
class HandLocation:
    """Where the hand and its metacarpals are, or why DXR cannot measure this image."""

    view: str | None = None
    """``PA``, ``lateral``, ``oblique`` or None when not determined (e.g. not a hand)."""
    refusal: tuple[str, str] | None = None
    """``(reason code, message)`` when the whole image must be refused."""
    metacarpals: dict[str, MetacarpalAxis] = field(default_factory=dict)
    bone_refusals: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Per-bone ``(reason, message)`` for II-IV when one bone cannot be measured."""
    outline_rc: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    """Hand (body part) outline, ``(N, 2)`` ``(row, col)`` pixels of the analysed image."""
    fingers_direction_rc: tuple[float, float] | None = None
    """Unit vector from wrist to fingers ``(d_row, d_col)``."""
    confidence: float = 0.0
    """0..1: location confidence (mean of the II-IV trace confidences)."""
    details: dict = field(default_factory=dict)
    """Diagnostic figures (unitless ratios, counts) behind the view decision."""


    @property
    def maturity(self) -> str | None:
        """``adult``, ``immature`` or None when the skeleton was not judged (no PA hand found)."""
        if self.refusal is not None and self.refusal[0] == "immature_skeleton":
            return "immature"
        return self.details.get("maturity")

    def summary(self, pixel_spacing_mm: float | None = None) -> dict:
        """What the finder found, as the JSON object of ``dxr-node locate`` (points ``[col, row]``)."""
        located = self.refusal is None and self.view == "PA" and all(n in self.metacarpals for n in ("II", "III", "IV"))
        reason, message = self.refusal if self.refusal is not None else (None, None)
        return {
            "status": "located" if located else "refused",
            "reason": reason,
            "message": message,
            "view": self.view,
            "maturity": self.maturity,
            "metacarpals": {
                n: {"base_px": [round(a.base_rc[1], 1), round(a.base_rc[0], 1)],
                    "head_px": [round(a.head_rc[1], 1), round(a.head_rc[0], 1)],
                    "length_mm": round(a.length_mm, 1)}
                for n, a in self.metacarpals.items()
            },
            "pixel_spacing_mm": pixel_spacing_mm,
        }


def _refuse(reason: str, message: str | None = None, **kw) -> HandLocation:
    return HandLocation(refusal=(reason, message or REASON_MESSAGES.get(reason, reason)), **kw)


# --------------------------------------------------------------------------------------------
# Working copy, background, body mask
# --------------------------------------------------------------------------------------------


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


def _unexposed_bands(g: np.ndarray) -> np.ndarray:
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
    return dilate_cross(bands, iterations=3) if bands.any() else bands


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


def _work_factor(pixel_spacing_mm: float) -> int:
    """Block size (pixels) that brings ``pixel_spacing_mm`` to about WORK_SPACING_MM."""
    return max(1, int(round(min(WORK_SPACING_MM / pixel_spacing_mm, 1e9))))  # min: 1e-320 mm gives inf


def _prepare(image: np.ndarray, pixel_spacing_mm: float) -> _Work:
    factor = _work_factor(pixel_spacing_mm)
    work = _downsample(image, factor)
    spacing = pixel_spacing_mm * factor
    finite = np.isfinite(work)
    if not finite.all():
        work = np.where(finite, work, np.nanmin(work[finite]) if finite.any() else 0.0)
    smooth = ndi.gaussian_filter(work, 0.6 / spacing)
    lo, hi = np.percentile(smooth, [1.0, 99.9])
    g = (smooth - lo) / max(hi - lo, 1e-12)
    bands = _unexposed_bands(g)
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
    lab, n = ndi.label(tissue)
    if n == 0:
        body = tissue
    else:
        sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]  # pixels per component
        body = lab == (1 + int(np.argmax(sizes)))
        body = _fill_holes(body)
    g = resid  # background-flattened image from here on
    soft = g[body & (g < t_bone)]
    tissue_level = float(np.median(soft, overwrite_input=True)) if soft.size else t_body
    return _Work(g=g, spacing_mm=spacing, factor=factor, bands=bands, body=body, tissue_level=tissue_level)


# --------------------------------------------------------------------------------------------
# Fingers and hand axis
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Finger:
    base_rc: np.ndarray  # where it leaves the palm (working pixels)
    tip_rc: np.ndarray
    length_px: float
    width_px: float
    area_px: int
    label: int

    @property
    def direction(self) -> np.ndarray:
        d = self.tip_rc - self.base_rc
        return d / (np.hypot(*d) + 1e-12)


def _open_disk(mask: np.ndarray, radius_px: float, dist: np.ndarray | None = None) -> np.ndarray:
    """Binary opening with a disk, via two distance transforms (fast for large radii).

    ``dist`` may pass in the mask's distance transform when it is reused for several radii.
    """
    eroded = (distance_to_background(mask) if dist is None else dist) > radius_px
    rows = np.flatnonzero(eroded.any(axis=1))
    if rows.size == 0:
        return eroded
    cols = np.flatnonzero(eroded.any(axis=0))
    # Only pixels within radius_px of the eroded set can be in the opening: the second transform
    # runs on its bounding box grown by the radius (every eroded pixel is inside, so the
    # distances there are the whole image's).
    pad = int(math.ceil(radius_px)) + 1
    r0, r1 = max(0, rows[0] - pad), min(mask.shape[0], rows[-1] + pad + 1)
    c0, c1 = max(0, cols[0] - pad), min(mask.shape[1], cols[-1] + pad + 1)
    opened = np.zeros(mask.shape, bool)
    opened[r0:r1, c0:c1] = distance_to_background(~eroded[r0:r1, c0:c1]) <= radius_px
    return opened


def _find_fingers(body: np.ndarray, spacing_mm: float, finger_radius_mm: float,
                  dist: np.ndarray | None = None) -> tuple[list[_Finger], np.ndarray]:
    """Protrusions thinner than ``2 * finger_radius_mm``: fingers (and thumb) on a PA hand."""
    radius_px = finger_radius_mm / spacing_mm
    palm = _open_disk(body, radius_px, dist)
    thin = body & ~palm
    thin = open_cross(thin)
    lab, n = ndi.label(thin)
    near_palm = dilate_cross(palm, iterations=2)
    fingers = []
    min_len = 1.2 * radius_px
    rows, cols = body.shape
    for k, box in enumerate(ndi.find_objects(lab), start=1):
        if box is None:
            continue
        m = lab[box] == k
        area = int(m.sum())
        if area < 0.8 * radius_px**2:
            continue
        offset = np.array([box[0].start, box[1].start])
        base_pix = np.argwhere(m & near_palm[box])
        if base_pix.shape[0] < 2:
            continue  # free-floating piece (e.g. an edge fragment), not a finger
        base = base_pix.mean(axis=0) + offset
        pix = np.argwhere(m) + offset
        d = np.hypot(*(pix - base).T)
        tip = pix[np.argmax(d)].astype(float)
        length = float(d.max())
        if length < min_len:
            continue
        width = area / max(length, 1.0)
        if width > 1.6 * radius_px * 2 or width < 0.3 * radius_px:
            continue  # a broad lobe, or a sliver of tissue along an edge, not a finger
        on_edge = (pix[:, 0] <= 1) | (pix[:, 0] >= rows - 2) | (pix[:, 1] <= 1) | (pix[:, 1] >= cols - 2)
        if on_edge.sum() > 4.0 * width:
            continue  # runs along the image border: the rim of a cut-off limb
        fingers.append(_Finger(base, tip, length, width, area, k))
    return fingers, palm


def _finger_cluster(fingers: list[_Finger]) -> list[_Finger]:
    """The fingers of one hand: candidates pointing the same way with bases close together.

    Spurious protrusions (the ends of a bracelet, a fold of tissue, the edge of a cut-off limb)
    are short or point elsewhere and fall out.
    """
    # A strip many widths long is a sliver of tissue along a field edge, not a finger; left in,
    # it would set the length scale and push the short fingers (V, the thumb) out.
    fingers = [f for f in fingers if f.length_px <= SLIVER_ELONGATION * f.width_px]
    if not fingers:
        return []
    longest = max(f.length_px for f in fingers)
    cands = [f for f in fingers if f.length_px >= 0.3 * longest]
    best: list[_Finger] = []
    for f in cands:
        reach = 2.5 * f.length_px
        group = [
            h
            for h in cands
            if float(np.dot(f.direction, h.direction)) > math.cos(math.radians(50))
            and np.hypot(*(h.base_rc - f.base_rc)) < reach
        ]
        if len(group) > len(best) or (
            len(group) == len(best) and sum(h.length_px for h in group) > sum(h.length_px for h in best)
        ):
            best = group
    if not best:
        return []
    # Add a thumb pointing further away (up to ~80 deg) from the mean finger direction.
    u = np.mean([h.direction for h in best], axis=0)
    u /= np.hypot(*u) + 1e-12
    centre = np.mean([h.base_rc for h in best], axis=0)
    spread = max(np.max([np.hypot(*(h.base_rc - centre)) for h in best]), 1.0)
    for f in cands:
        if any(f is h for h in best):
            continue
        if float(np.dot(f.direction, u)) > math.cos(math.radians(85)) and np.hypot(*(f.base_rc - centre)) < 2.5 * spread + f.length_px:
            best.append(f)
    return best


@dataclass
class _HandFrame:
    """A canonical frame: fingers up (towards row 0), thumb towards +col.

    A canonical pixel ``(y, x)`` is the working pixel ``centre + (y - cy) * (-u) + (x - cx) * v``.
    ``v`` points to the thumb side, so the frame is mirrored for one hand and not the other:
    the numbering I-V never depends on which hand it is.
    """

    centre: np.ndarray
    u: np.ndarray  # wrist -> fingers, working (row, col)
    v: np.ndarray  # towards the thumb
    shape: tuple[int, int]

    def to_work(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cy, cx = self.shape[0] / 2.0, self.shape[1] / 2.0
        r = self.centre[0] - (y - cy) * self.u[0] + (x - cx) * self.v[0]
        c = self.centre[1] - (y - cy) * self.u[1] + (x - cx) * self.v[1]
        return r, c

    def from_work(self, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cy, cx = self.shape[0] / 2.0, self.shape[1] / 2.0
        dr, dc = r - self.centre[0], c - self.centre[1]
        y = cy - (dr * self.u[0] + dc * self.u[1])
        x = cx + (dr * self.v[0] + dc * self.v[1])
        return y, x

    def sample(self, image: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
        yy, xx = np.mgrid[0 : self.shape[0], 0 : self.shape[1]].astype(float)
        r, c = self.to_work(yy, xx)
        if order == 1:
            return bilinear(image, r, c, mode="constant", cval=cval)
        return ndi.map_coordinates(np.asarray(image, dtype=float), [r, c], order=order, mode="constant", cval=cval)


def _thumb_and_axis(cluster: list[_Finger], body: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[_Finger], dict]:
    """Hand axis ``u``, thumb direction ``v`` and the fingers ordered from the thumb side.

    Returns ``ordered`` with the thumb first when it was found as a finger, else the four
    long fingers starting from the thumb side.
    """
    info: dict = {}
    dirs = np.array([f.direction for f in cluster])
    bases = np.array([f.base_rc for f in cluster])
    u = dirs.mean(axis=0)
    u /= np.hypot(*u) + 1e-12
    v = np.array([u[1], -u[0]])
    for _ in range(2):
        order = np.argsort(bases @ v)
        ordered = [cluster[i] for i in order]
        if len(ordered) < 3:
            break
        # Proximal offset of each end finger's base relative to its neighbours, in units of the
        # finger spacing: the thumb leaves the hand far proximal to the others.
        spacing = np.median(np.diff(np.sort(bases @ v))) + 1e-9
        scores = []
        # rest: the other fingers, nearest first (the neighbours set the reference level)
        for end, rest in ((ordered[0], ordered[1:]), (ordered[-1], ordered[-2::-1])):
            prox = (np.mean([f.base_rc @ u for f in rest[:2]]) - end.base_rc @ u) / spacing
            angle = math.degrees(math.acos(np.clip(np.dot(end.direction, np.mean([f.direction for f in rest], 0) / (np.hypot(*np.mean([f.direction for f in rest], 0)) + 1e-12)), -1, 1)))
            scores.append(prox + angle / 30.0)
        info["thumb_scores"] = [round(float(s), 2) for s in scores]
        thumb_end = int(np.argmax(scores))
        if len(cluster) == 5 or scores[thumb_end] > 1.5:
            thumb = ordered[0] if thumb_end == 0 else ordered[-1]
            others = [f for f in cluster if f is not thumb]
            u = np.mean([f.direction for f in others], axis=0)
            u /= np.hypot(*u) + 1e-12
            v = np.array([u[1], -u[0]])
            side = np.sign((thumb.base_rc - np.mean([f.base_rc for f in others], 0)) @ v) or 1.0
            v = v * side
            info["thumb_from"] = "finger"
            rest = sorted(others, key=lambda f: -(f.base_rc @ v))
            return u, v, [thumb] + rest, info
    # No thumb among the fingers: the thenar side of the palm carries more tissue beside the
    # outermost fingers.
    proj = bases @ v
    lo, hi = proj.min(), proj.max()
    spacing = (hi - lo) / max(len(cluster) - 1, 1)
    pts = np.argwhere(body).astype(float)
    along = pts @ u
    web = np.min(bases @ u)
    band = (along < web) & (along > web - 4 * spacing)
    side = pts[band] @ v
    left = np.count_nonzero(side < lo - 0.5 * spacing)
    right = np.count_nonzero(side > hi + 0.5 * spacing)
    info["thumb_from"] = "thenar"
    info["thenar_counts"] = (int(left), int(right))
    if left > right:
        v = -v
    rest = sorted(cluster, key=lambda f: -(f.base_rc @ v))
    return u, v, rest, info


# --------------------------------------------------------------------------------------------
# Metacarpal shafts in the canonical frame
# --------------------------------------------------------------------------------------------


def _tophat(image: np.ndarray, size_px: int) -> np.ndarray:
    """White top-hat with a square: bone above the local soft-tissue floor."""
    size_px = max(3, int(size_px) | 1)
    opened = ndi.maximum_filter(ndi.minimum_filter(image, size_px), size_px)
    return image - opened


def _ridge_x(image: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    """Strength of bright ridges running along the rows' normal (near-vertical bones)."""
    return -ndi.gaussian_filter(image, (sigma_y, sigma_x), order=(0, 2)) * sigma_x**2


def _peaks_1d(profile: np.ndarray, min_height: float) -> np.ndarray:
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


def _fit_shaft_lines(ridge: np.ndarray, finger_bases: np.ndarray, finger_dirs: np.ndarray, s: float,
                     bone_for_centre: np.ndarray | None = None, window=(1.2, 3.0), seed_window=(1.4, 2.2)):
    """Straight lines along the shafts of metacarpals II-V (canonical frame).

    Ridge peaks on every row of the mid-palm band are assigned to the nearest predicted line
    (first the finger's own direction carried on proximally), then each line is refitted by
    least squares; three rounds.
    """
    h, w = ridge.shape
    y_web = float(np.median(finger_bases[:, 0]))
    y0 = int(max(1, y_web + window[0] * s))
    y1 = int(min(h - 2, y_web + window[1] * s))
    rows = np.arange(y0, y1 + 1)
    if rows.size < 5:
        return None
    # Ridge peaks of every row at once: (n_rows, max peaks per row), +inf where a row has fewer.
    peaks_x = _row_peaks(ridge[rows], 0.1)
    # Seed each line on a peak of the ridge averaged over the middle of the shafts, matching
    # the four fingers to four peaks in order (II has the largest x: the thumb side).
    yc0, yc1 = int(max(1, y_web + seed_window[0] * s)), int(min(h - 2, y_web + seed_window[1] * s))
    mean_prof = ridge[yc0 : yc1 + 1].mean(axis=0)
    yc = 0.5 * (yc0 + yc1)
    pk = _peaks_1d(mean_prof, SEED_PEAK_MIN * max(mean_prof.max(), 1e-9))
    pk = pk[np.argsort(-pk)]
    slopes, preds = [], []
    for (yb, xb), (dy, dx) in zip(finger_bases, finger_dirs):
        slope = dx / dy if abs(dy) > 1e-6 else 0.0
        b = 0.5 * slope  # metacarpals fan less than fingers
        slopes.append(b)
        preds.append(xb + b * (yc - yb))
    chosen = _match_in_order(np.array(preds), pk.astype(float), 0.8 * s)
    lines = np.array([[x - b * yc, b] for x, b in zip(chosen, slopes)], float)
    support = np.zeros(len(lines))
    rms = np.full(len(lines), np.inf)
    has_peak = np.isfinite(peaks_x[:, 0]) if peaks_x.shape[1] else np.zeros(rows.size, bool)
    n_lines = len(lines)
    for it in range(3):
        tol = (0.35 if it == 0 else 0.2) * s
        # Per row and line: the nearest peak (the first of equals), kept when it lies within tol
        # and nearer this line than any other line.
        xl = lines[None, :, 0] + lines[None, :, 1] * rows[:, None]  # (n_rows, n_lines)
        nearest = np.zeros((rows.size, n_lines), int)
        if peaks_x.shape[1]:
            nearest = np.argmin(np.abs(peaks_x[:, None, :] - xl[:, :, None]), axis=2)
        pk = np.take_along_axis(peaks_x, nearest, axis=1) if peaks_x.shape[1] else np.full(xl.shape, np.inf)
        d = np.abs(pk - xl)
        to_others = np.abs(xl[:, None, :] - pk[:, :, None])  # [row, line k, other line]
        to_others[:, np.arange(n_lines), np.arange(n_lines)] = np.inf
        keep = has_peak[:, None] & (d < tol) & (to_others.min(axis=2) > d)
        for k in range(n_lines):
            sel = keep[:, k]
            n_pts = int(np.count_nonzero(sel))
            support[k] = n_pts / rows.size
            if n_pts < 0.3 * rows.size:
                continue
            py, px = rows[sel].astype(float), pk[sel, k]
            coef = np.polyfit(py, px, 1)
            lines[k] = [coef[1], coef[0]]
            rms[k] = float(np.sqrt(np.mean((px - np.polyval(coef, py)) ** 2)))
    # Re-centre: a ridge filter can lock onto one cortex of a hollow shaft; the centroid of the
    # bone signal across the shaft cannot.
    for k in range(len(lines)):
        if support[k] < 0.3:
            continue
        a, b = lines[k]
        half = CENTRE_HALF_WIDTH * s
        # Centroid of the bone signal (above its minimum) in a window around the line, per row.
        src = bone_for_centre if bone_for_centre is not None else ridge
        xc = a + b * rows
        lo = np.maximum(0, np.floor(xc - half)).astype(int)
        hi = np.minimum(w - 1, np.ceil(xc + half)).astype(int)
        span = int(max(np.max(hi - lo) + 1, 1))
        offs = np.arange(span)
        cols = lo[:, None] + offs[None, :]
        inside = cols <= hi[:, None]
        seg = src[rows[:, None], np.clip(cols, 0, w - 1)]
        floor_ = np.where(inside, seg, np.inf).min(axis=1)
        seg = np.where(inside, seg - floor_[:, None], 0.0)
        total = seg.sum(axis=1)
        ok = (hi >= lo) & (total > 0)
        if np.count_nonzero(ok) >= 5:
            xs_c = lo[ok] + (seg[ok] @ offs) / total[ok]
            coef = np.polyfit(rows[ok].astype(float), xs_c, 1)
            lines[k] = [coef[1], coef[0]]
    return lines, support, rms, y_web


def _match_in_order(preds: np.ndarray, peaks: np.ndarray, max_dist: float) -> np.ndarray:
    """Pick one peak per prediction, keeping the order (both sorted descending), minimising the
    total distance; a prediction with no peak within ``max_dist`` keeps its own position."""
    n, m = len(preds), len(peaks)
    out = preds.astype(float).copy()
    if m == 0:
        return out
    big = 1e9
    cost = np.full((n + 1, m + 1), big)
    cost[0, :] = 0.0
    choice = np.zeros((n + 1, m + 1), int)  # 1 = prediction i-1 took peak j-1
    for i in range(1, n + 1):
        cost[i, 0] = cost[i - 1, 0] + max_dist  # unmatched prediction
        for j in range(1, m + 1):
            skip = cost[i, j - 1]
            d = abs(preds[i - 1] - peaks[j - 1])
            take = cost[i - 1, j - 1] + (d if d < max_dist else big)
            unmatched = cost[i - 1, j] + max_dist
            best = min(skip, take, unmatched)
            cost[i, j] = best
            choice[i, j] = 0 if best == skip else (1 if best == take else 2)
    i, j = n, m
    while i > 0 and j > 0:
        c = choice[i, j]
        if c == 0:
            j -= 1
        elif c == 1:
            out[i - 1] = peaks[j - 1]
            i -= 1
            j -= 1
        else:
            i -= 1
    return out


def _along(image: np.ndarray, a: float, b: float, ys: np.ndarray, half_px: float = 1.0) -> np.ndarray:
    """Mean of ``image`` across a narrow band centred on the line x = a + b*y, per y."""
    offs = np.linspace(-half_px, half_px, 3)
    xs = a + b * ys
    vals = bilinear(image, ys[None, :], xs[None, :] + offs[:, None], mode="nearest")
    return np.mean(vals, axis=0)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------

# Tuning constants. Lengths in "s" are multiples of the finger spacing (the distance between
# neighbouring fingers where they leave the palm), the hand's own scale; "L" is bone length.
# Values were set on the 10 adult PA hands of ../shared/data/real-hands (assumed 0.1 mm/px)
# and checked on the phantom (tests/phantom.py) at 0.08-0.2 mm/px.

FINGER_RADII_MM = (10.0, 13.0, 8.0)
"""Opening radii that separate fingers (narrower) from the palm (wider), mm, in order of trial."""
HAND_SCALES = (1.0, 0.75, 0.55, 1.4)
"""Relative hand sizes tried, in order, when the fingers do not show at the nominal size: a child's
hand, a small adult's, or a pixel size that is wrong (a guessed spacing, magnification) make the
hand look smaller or larger in mm than an adult's. The hand's own finger spacing sets every
later length."""
SLIVER_ELONGATION = 12.0
"""A protrusion longer than this many widths is a sliver along a field edge (fingers, with the part of
the hand the opening cuts off with them, reach about 9 on FracAtlas thumbnails; slivers 14-30)."""
MIN_HAND_AREA_MM2 = 1500.0
"""Smallest body part (at the nominal hand size, mm²) that can hold a hand."""
FINGER_MIN_LENGTH_MM = 22.0
"""A protrusion shorter than this is no finger (a marker touching the skin, a styloid)."""
LATERAL_MAX_RIDGES = 3
"""With two or three finger strips: at most this many bone ridges across the palm behind them is a
lateral view (the metacarpals stacked), more an oblique one (fanned partly apart). FracAtlas
thumbnails: laterals 1-3 (a few 4-5), obliques 4-5."""

_RELATIVE_LENGTH = {"I": 0.72, "II": 1.07, "III": 1.0, "IV": 0.87, "V": 0.82}
"""Metacarpal lengths relative to MC III (adult anatomy)."""
_LENGTH_PER_SPACING = 2.75
"""First guess of L(III) in s (median on the real hands; the hand's own scale replaces it)."""
BASE_WINDOW = (0.7, 1.35)
BASE_PRIOR_SD = 0.2
"""First pass: the base is the strongest joint line within BASE_WINDOW of the expected length,
weighted by a Gaussian of this relative SD about it."""
SCALE_RANGE = (2.2, 4.2)
"""Plausible L(III) in s (real hands 2.4-3.3, the phantom 3.6)."""
SCALE_TOLERANCE = 0.06
"""Relative tolerance of a base position about the common hand scale."""
SCALE_PEAK_FRACTION = 0.6
"""A hand scale whose joint-line score reaches this fraction of the best is a candidate; the
shortest candidate wins (the carpometacarpal line, not the midcarpal one behind it)."""

SEED_PEAK_MIN = 0.25
"""Ridge peaks weaker than this fraction of the strongest do not seed a shaft line."""
RIDGE_SIGMA = 0.12
"""Across-shaft scale of the ridge filter, in s."""
CENTRE_HALF_WIDTH = 0.35
"""Half-width (in s) of the window in which a shaft line is re-centred on the bone signal."""

HEAD_TOPHAT = 1.3
"""Top-hat size (in s) for the bone signal along a shaft."""
HEAD_SEARCH = 2.8
"""How far distal to mid-shaft (in s) the MCP joint is looked for."""
HEAD_FROM_WEB = (-0.3, 2.0)
"""Where the MCP joint may lie relative to where the finger leaves the palm (in s, + = proximal)."""
HEAD_VALLEY_FRACTION = 0.7
"""The MCP joint is the first joint line distal to mid-shaft at least this fraction as strong as
the strongest in the search window."""
HEAD_BAND = 0.15
"""Half-width (in s) of the band averaged along a shaft on the working copy."""
FINE_BAND_MM = 1.5
"""Half-width (mm) of the band averaged along a shaft on the full-resolution image."""
JOINT_SIGMA_MM = 0.4
"""Scale (mm) of the second-derivative filter that finds joint spaces (1-2 mm dark bands)."""

THUMB_WINDOW = (0.2, 1.6)
"""Where metacarpal I's shaft lies relative to the thumb's base (in s), for its line fit."""
THUMB_SEED_WINDOW = (0.4, 1.2)
THUMB_WEB_OFFSET = 0.0

METAL_ALONG_RATIO = 2.5
"""Something this many times brighter than the shaft on a shaft line is metal."""

CARPAL_FILL_MIN = 0.3
"""Below this ossified fraction of the least ossified band of the carpus the hand is a young
child's (real adults 0.58-0.99, adult phantoms about 0.6-0.7; the FracAtlas 2-4 year old 0.17,
child phantoms 0)."""
CARPAL_BAND = 0.2
"""Height of that band, as a fraction of L."""


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


def _fine_profile_sampler(image, frame, factor, a, b, pixel_spacing_mm):
    """``fine(y0, y1)``: the canonical-frame line ``x = a + b*y`` from y0 to y1, sampled on the
    full-resolution image in 0.1 mm steps and +-FINE_BAND_MM across; returns the canonical ``y``
    of each sample, the profile values and the step (mm)."""
    step_px = max(1.0, 0.1 / pixel_spacing_mm)

    def fine(y0, y1):
        p0 = np.array(_to_image_rc(frame, factor, y0, a + b * y0))
        p1 = np.array(_to_image_rc(frame, factor, y1, a + b * y1))
        t, vals = _axial_profile(image, p0, p1, step_px, FINE_BAND_MM / pixel_spacing_mm)
        return y0 + t * (y1 - y0), vals, step_px * pixel_spacing_mm

    return fine


def _axial_profile(image: np.ndarray, p0: np.ndarray, p1: np.ndarray, step_px: float, half_width_px: float):
    """Mean of ``image`` across a band of +-half_width along p0 -> p1 (``(row, col)``)."""
    d = p1 - p0
    n = max(2, int(np.hypot(*d) / step_px) + 1)
    t = np.linspace(0.0, 1.0, n)
    pts = p0[None, :] + t[:, None] * d[None, :]
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-12)
    offs = np.linspace(-half_width_px, half_width_px, 5)
    vals = bilinear(image, pts[None, :, 0] + offs[:, None] * normal[0], pts[None, :, 1] + offs[:, None] * normal[1],
                    mode="nearest")
    return t, np.mean(vals, axis=0)


def _ends_along(profile_y: np.ndarray, prof: np.ndarray, raw: np.ndarray, ridge: np.ndarray, y_web: float, s: float, rel: float, fine=None, length_per_spacing: float = 0.0):
    """Head, first-guess base (canonical y) and shaft level of one metacarpal.

    ``prof`` is the bone (top-hat) signal and ``ridge`` the ridge strength along the shaft line,
    sampled at ``profile_y``; ``fine(y0, y1)`` returns the full-resolution axial profile between
    two canonical y. Mid-shaft is the strongest stretch of ridge; the head (MCP joint space) is
    the first strong joint line distal to it, within ``HEAD_FROM_WEB`` of where the finger
    leaves the palm (``y_web``). The first-guess base is the strongest joint line near
    ``length_per_spacing * s * rel`` proximal to the head (:func:`_bases_by_scale` then places
    the bases of all the bones at one hand scale). ``raw`` (the flattened working image) is used
    only when ``fine`` is not given.
    """
    step = float(profile_y[1] - profile_y[0]) if profile_y.size > 1 else 1.0
    shaft = (profile_y > y_web + 1.2 * s) & (profile_y < y_web + 2.0 * s)
    if not shaft.any():
        return None
    level = float(np.median(prof[shaft]))
    if level <= 0:
        return None
    span = max(2, int(round(0.35 * s / step)))
    # Mid-shaft: the strongest stretch of the shaft ridge (a clean hollow tube); from there walk
    # distally to the first clear dip of the bone signal, the MCP joint space.
    hump = (profile_y > y_web + 0.6 * s) & (profile_y < y_web + 3.0 * s)
    if not hump.any():
        return None
    k0 = int(np.argmax(np.where(hump, ridge, -np.inf)))
    near = np.abs(profile_y - profile_y[k0]) < 0.3 * s
    level = float(np.median(prof[near]))
    if level <= 0:
        return None
    # Joint spaces are narrow dark bands (about 1-2 mm) between the bright subchondral plates
    # of two bones: a strong positive second derivative of the axial profile at that scale.
    # The broad, less dense middle of a metacarpal head is not. The MCP joint space is the
    # strongest such band between mid-shaft and the PIP joint.
    # On real PA hands the MCP joint lies 0.2-1.0 finger spacings proximal to where the finger
    # leaves the palm (measured on ../shared/data/real-hands), and distal to mid-shaft.
    y_lo = float(max(profile_y[k0] - HEAD_SEARCH * s, y_web + HEAD_FROM_WEB[0] * s))
    y_hi = float(min(profile_y[k0], y_web + HEAD_FROM_WEB[1] * s))
    if y_hi - y_lo < 0.3 * s:
        y_lo, y_hi = float(profile_y[k0] - HEAD_SEARCH * s), float(profile_y[k0])
    if fine is not None:
        fy, fp, fstep_mm = fine(y_lo, y_hi)
        sig = max(1.0, JOINT_SIGMA_MM / fstep_mm)
        valley = ndi.gaussian_filter1d(fp, sig, order=2) * sig**2
        if valley.size < 3 or valley.max() <= 0:
            return None
        # The first strong joint line distal to mid-shaft: the MCP joint space. (The base of the
        # proximal phalanx can hold a similar line just beyond it.)
        strong = valley >= HEAD_VALLEY_FRACTION * float(valley.max())
        is_peak = np.r_[False, (valley[1:-1] >= valley[:-2]) & (valley[1:-1] >= valley[2:]), False]
        candidates = np.nonzero(strong & is_peak)[0]
        k = int(candidates.max()) if candidates.size else int(np.argmax(valley))  # fy increases proximally
        head = float(fy[k])
    else:
        sig = max(1.0, 0.05 * s / step)
        valley = ndi.gaussian_filter1d(raw, sig, order=2) * sig**2
        stop = max(1, int(np.searchsorted(profile_y, y_lo)))
        seg = valley[stop:k0]
        if seg.size < 3 or seg.max() <= 0:
            return None
        head = float(profile_y[stop + int(np.argmax(seg))])
    expected = (length_per_spacing or _LENGTH_PER_SPACING) * s * rel
    base = head + expected
    if fine is not None:
        # The carpometacarpal joint: the strongest joint-like band near the expected length.
        fy, fp, fstep_mm = fine(head + BASE_WINDOW[0] * expected, head + BASE_WINDOW[1] * expected)
        sig = max(1.0, JOINT_SIGMA_MM / fstep_mm)
        valley = ndi.gaussian_filter1d(fp, sig, order=2) * sig**2
        if valley.size >= 3 and valley.max() > 0:
            # Strength of the joint line, weighted by how plausible its distance from the head is.
            prior = np.exp(-0.5 * ((fy - (head + expected)) / (BASE_PRIOR_SD * expected)) ** 2)
            base = float(fy[int(np.argmax(np.maximum(valley, 0.0) * prior))])
    return head, base, level, 1.0


def _bases_by_scale(ends: dict, fines: dict, s: float, *, exclude: set, details: dict) -> dict:
    """Re-place the bases of the traced metacarpals at one common hand scale.

    ``ends``: name -> (head_y, base_y) in canonical y; ``fines``: name -> callable returning the
    full-resolution axial profile between two canonical y. The scale ``lam`` is the length of
    MC III in finger spacings ``s``; each bone's base is expected at
    ``head + lam * _RELATIVE_LENGTH[name] * s``.
    """
    voters = [n for n in ends if n not in exclude]
    if len(voters) < 2:
        return ends
    lams = np.linspace(SCALE_RANGE[0], SCALE_RANGE[1], 81)
    valleys = {}
    for n, (head, _) in ends.items():
        rel = _RELATIVE_LENGTH[n] * s
        fy, fp, fstep_mm = fines[n](head + 0.9 * SCALE_RANGE[0] * rel, head + 1.1 * SCALE_RANGE[1] * rel)
        sig = max(1.0, JOINT_SIGMA_MM / fstep_mm)
        v = np.maximum(ndi.gaussian_filter1d(fp, sig, order=2) * sig**2, 0.0)
        if v.size < 3 or v.max() <= 0:
            continue
        valleys[n] = (fy, v / v.max())
    voters = [n for n in voters if n in valleys]
    if len(voters) < 2:
        return ends
    score = np.zeros(lams.size)
    for n in voters:
        fy, v = valleys[n]
        head = ends[n][0]
        rel = _RELATIVE_LENGTH[n] * s
        # For every scale at once: the strongest joint line within tolerance of the predicted base.
        pred = head + lams * rel
        near = np.abs(fy[None, :] - pred[:, None]) <= (SCALE_TOLERANCE * lams * rel)[:, None]
        score += np.where(near, v[None, :], 0.0).max(axis=1)  # v >= 0: 0 where nothing is near
    # The most distal joint line that the bones agree on nearly as well as on the best one: the
    # carpometacarpal joints, not the midcarpal joint line further up, which is just as straight.
    peaks = [i for i in range(lams.size) if (i == 0 or score[i] >= score[i - 1])
             and (i == lams.size - 1 or score[i] >= score[i + 1])]
    good = [i for i in peaks if score[i] >= SCALE_PEAK_FRACTION * score.max()]
    lam = float(lams[min(good)]) if good else float(lams[int(np.argmax(score))])
    details["length_per_spacing"] = round(lam, 2)
    out = {}
    for n, (head, base) in ends.items():
        if n not in valleys:
            out[n] = (head, head + lam * _RELATIVE_LENGTH[n] * s)
            continue
        fy, v = valleys[n]
        pred = head + lam * _RELATIVE_LENGTH[n] * s
        sd = SCALE_TOLERANCE * (pred - head)
        near = np.abs(fy - pred) <= 1.5 * sd
        weighted = np.where(near, v * np.exp(-0.5 * ((fy - pred) / sd) ** 2), 0.0)
        # No clear joint line near the predicted base: trust the hand scale.
        out[n] = (head, float(fy[int(np.argmax(weighted))]) if weighted.max() > 0.25 else float(pred))
    return out


def _thumb_metacarpal(image, w: _Work, thumb: _Finger, s: float, lam: float, pixel_spacing_mm: float):
    """Axis of metacarpal I, traced like II-V in a frame aligned with the thumb (display only)."""
    u = thumb.direction
    v = np.array([u[1], -u[0]])
    frame = _HandFrame(thumb.base_rc - 1.2 * s * u, u, v, (int(4.5 * s), int(2.5 * s)))
    canon = frame.sample(w.g)
    yb, xb = (float(q) for q in frame.from_work(np.array(thumb.base_rc[0]), np.array(thumb.base_rc[1])))
    bone = _tophat(canon, int(round(0.7 * s)))
    ridge = _ridge_x(bone, 0.25 * s, RIDGE_SIGMA * s)
    fit = _fit_shaft_lines(ridge, np.array([[yb, xb]]), np.array([[-1.0, 0.0]]), s, bone,
                           window=THUMB_WINDOW, seed_window=THUMB_SEED_WINDOW)
    if fit is None:
        return None
    lines, support, rms, _ = fit
    if support[0] < 0.5:
        return None
    a, b = lines[0]
    ys = np.arange(0.0, canon.shape[0] - 1.0, 0.5)
    prof = ndi.gaussian_filter1d(_along(_tophat(canon, int(round(HEAD_TOPHAT * s))), a, b, ys, 1.0), 1.0)
    raw = ndi.gaussian_filter1d(_along(canon, a, b, ys, HEAD_BAND * s), 1.0)
    rprof = ndi.gaussian_filter1d(_along(ridge, a, b, ys, 1.0), 2.0)

    fine = _fine_profile_sampler(image, frame, w.factor, a, b, pixel_spacing_mm)

    # The thumb's web is deep: its MCP joint lies about where the thumb leaves the palm.
    ends = _ends_along(ys, prof, raw, rprof, yb + THUMB_WEB_OFFSET * s, s, _RELATIVE_LENGTH["I"], fine, lam)
    if ends is None:
        return None
    head_y, base_y = ends[0], ends[1]
    head_rc = _to_image_rc(frame, w.factor, head_y, a + b * head_y)
    base_rc = _to_image_rc(frame, w.factor, base_y, a + b * base_y)
    length_mm = float(np.hypot(head_rc[0] - base_rc[0], head_rc[1] - base_rc[1])) * pixel_spacing_mm
    return MetacarpalAxis("I", base_rc, head_rc, length_mm, None, float(np.clip(support[0], 0, 1)))


def _carpal_fill(canon: np.ndarray, lines: np.ndarray, ends: dict, names: tuple[str, ...],
                 inside: np.ndarray | None = None) -> float | None:
    """Fraction of the carpus (just proximal to the metacarpal bases) that is ossified.

    An adult's carpus is a block of bone between the metacarpal bases and the radius; a young
    child's is mostly cartilage, which on a radiograph looks like soft tissue. Levels are
    relative: 0 = soft tissue between the shafts, 1 = shaft of MC III, threshold halfway.
    """
    if not all(n in ends for n in ("II", "III", "IV")):
        return None
    k3 = names.index("III")
    a3, b3 = lines[k3]
    head3, base3 = ends["III"]
    length = base3 - head3
    if length <= 2:
        return None
    h, w = canon.shape
    # Bone level: centre of the III shaft; soft tissue: midway between III and IV shafts.
    ys = np.linspace(head3 + 0.35 * length, head3 + 0.65 * length, 15)
    bone_level = float(np.median(_along(canon, a3, b3, ys, 1.0)))
    k4 = names.index("IV")
    a4, b4 = lines[k4]
    soft_level = float(np.median(_along(canon, 0.5 * (a3 + a4), 0.5 * (b3 + b4), ys, 1.0)))
    if bone_level - soft_level <= 1e-6:
        return None
    base_y = float(np.mean([ends[n][1] for n in ("II", "III", "IV")]))
    x_lo = min(lines[names.index("IV")][0] + lines[names.index("IV")][1] * base_y,
               lines[names.index("II")][0] + lines[names.index("II")][1] * base_y)
    x_hi = max(lines[names.index("IV")][0] + lines[names.index("IV")][1] * base_y,
               lines[names.index("II")][0] + lines[names.index("II")][1] * base_y)
    # Rows from a little before the bases to well into the forearm; the least ossified band of
    # CARPAL_BAND * L is the verdict, so that where exactly the bases were put matters little:
    # an adult's carpus is bone all the way (joint spaces are thin), a young child's has a
    # wide band of cartilage somewhere between the metacarpals and the radius.
    y0, y1 = int(round(base_y - 0.05 * length)), int(round(base_y + 0.6 * length))
    x0, x1 = int(round(x_lo)), int(round(x_hi))
    y0, y1 = max(0, y0), min(h, y1)
    x0, x1 = max(0, x0), min(w, x1)
    band = max(2, int(round(CARPAL_BAND * length)))
    if y1 - y0 < band + 1 or x1 - x0 < 2:
        return None
    bony = ((canon[y0:y1, x0:x1] - soft_level) / (bone_level - soft_level)) > 0.5
    valid = inside[y0:y1, x0:x1] if inside is not None else np.ones_like(bony)
    if valid.mean() < 0.8:
        return None  # the carpus is (partly) outside the field or the hand: no verdict
    row_bone = bony.sum(axis=1).astype(float)
    row_valid = valid.sum(axis=1).astype(float)
    kernel = np.ones(band)
    fill = np.convolve(row_bone, kernel, "valid") / np.maximum(np.convolve(row_valid, kernel, "valid"), 1.0)
    return float(fill.min())


def _to_image_rc(frame: _HandFrame, factor: int, y: float, x: float) -> tuple[float, float]:
    r, c = frame.to_work(np.asarray(y, float), np.asarray(x, float))
    # Working pixel k covers image pixels [k*f, (k+1)*f): its centre is k*f + (f-1)/2.
    return (float(r) * factor + 0.5 * (factor - 1), float(c) * factor + 0.5 * (factor - 1))


def _work_index(image_px: float, factor: int) -> int:
    """Index of the working pixel (block) that holds image pixel coordinate ``image_px`` (one axis);
    the inverse of :func:`_to_image_rc` (``round(image_px / factor)`` was half a block off)."""
    return int(math.floor((image_px + 0.5) / factor))


def _palm_ridge_count(w: _Work, cluster: list[_Finger]) -> int | None:
    """Bone ridges across the palm just proximal to the fingers found (their direction = up).

    A lateral view stacks the metacarpals: one or two ridges (with the thumb's). An oblique
    view fans them partly apart: three or more.
    """
    u = np.mean([f.direction for f in cluster], axis=0)
    norm = float(np.hypot(*u))
    if norm < 1e-6:
        return None
    u = u / norm
    v = np.array([u[1], -u[0]])
    base = np.mean([f.base_rc for f in cluster], axis=0)
    s = max(1.2 * float(np.median([f.width_px for f in cluster])), 8.0 / w.spacing_mm)
    frame = _HandFrame(base - 2.0 * s * u, u, v, (int(5 * s), int(6 * s)))
    canon = frame.sample(w.g)
    ridge = _ridge_x(_tophat(canon, int(round(0.7 * s))), 0.25 * s, RIDGE_SIGMA * s)
    yb, _ = frame.from_work(np.array(base[0]), np.array(base[1]))
    counts = []
    for k0, k1 in ((0.5, 1.5), (1.0, 2.0), (1.5, 2.5)):
        band = ridge[max(0, int(yb + k0 * s)) : max(0, int(yb + k1 * s))]
        if band.shape[0] == 0:
            continue
        prof = band.mean(axis=0)
        if prof.max() <= 0:
            continue
        counts.append(int(_peaks_1d(prof, 0.25 * prof.max()).size))
    return int(np.median(counts)) if counts else None


def _complete_fingers(three: list[_Finger], v: np.ndarray) -> list[_Finger]:
    """Four fingers II-V from three found ones, ordered from the thumb side (``v``).

    Where two found fingers are twice as far apart as the other pair, the missing finger lies
    between them; otherwise it is the little finger, one spacing beyond the last, leaving the
    palm a third of a spacing more proximally.
    """
    proj = np.array([f.base_rc @ v for f in three])
    gaps = np.abs(np.diff(proj))
    direction = np.mean([f.direction for f in three], axis=0)
    direction /= np.hypot(*direction) + 1e-12
    length = float(np.median([f.length_px for f in three]))
    width = float(np.median([f.width_px for f in three]))
    if gaps.max() > 1.6 * gaps.min():
        k = int(np.argmax(gaps))
        base = 0.5 * (three[k].base_rc + three[k + 1].base_rc)
        slot = k + 1
    else:
        step = float(np.median(gaps))
        base = three[-1].base_rc - step * v - step / 3.0 * direction
        slot = 3
    virtual = _Finger(base, base + length * direction, length, width, int(length * width), -1)
    return three[:slot] + [virtual] + three[slot:]


def _non_pa_view(w: _Work, cluster: list[_Finger], details: dict) -> HandLocation:
    """Refusal for an image where the four fingers of a PA hand were not found side by side.

    No finger at all (or one short nub): not a hand (a chest, a knee, a forearm alone). One
    finger-long strip: the stacked fingers of a lateral view. Two or three strips: lateral when
    the palm just behind them shows at most LATERAL_MAX_RIDGES bone ridges (the metacarpals
    stacked), oblique when it shows more (fanned partly apart).
    """
    details.update(fingers_found=len(cluster))
    if not cluster:
        return _refuse("not_pa_hand", details=details)
    if len(cluster) == 1:
        f = cluster[0]
        details["finger_strip_length_mm"] = round(float(f.length_px * w.spacing_mm), 1)
        if f.length_px * w.spacing_mm < FINGER_MIN_LENGTH_MM:
            # A nub (a marker touching the skin, a styloid) is no finger: no hand in view.
            return _refuse("not_pa_hand", details=details)
    if len(cluster) == 1:
        # One strip of finger length: the four fingers stacked one over the other (a lateral view).
        # An oblique hand fans its fingers at least partly apart (on the FracAtlas thumbnails, 96 %
        # of single-strip hands are lateral views).
        details["finger_strip_elongation"] = round(float(cluster[0].length_px / max(cluster[0].width_px, 1e-6)), 2)
        return _refuse("lateral_view", view="lateral", details=details)
    ridges = _palm_ridge_count(w, cluster)
    details["palm_ridges"] = ridges
    if ridges is not None and ridges <= LATERAL_MAX_RIDGES:
        return _refuse("lateral_view", view="lateral", details=details)
    return _refuse("oblique_view", view="oblique", details=details)


def locate_hand(image_bone_bright: np.ndarray, pixel_spacing_mm: float) -> HandLocation:
    """Find the hand, decide its view, and trace the axes of metacarpals I-V.

    Parameters
    ----------
    image_bone_bright : ndarray (rows, cols)
        The radiograph with bone bright (any scale; 8-bit exports work).
    pixel_spacing_mm : float
        Pixel size in mm (used to choose the working resolution and to report lengths).

    Returns
    -------
    HandLocation
        ``refusal`` set (and ``metacarpals`` empty) when the image is not a measurable PA hand:
        ``not_pa_hand``, ``lateral_view``, ``oblique_view``, ``immature_skeleton`` or
        ``bone_not_found``. Otherwise ``view == "PA"`` and ``metacarpals`` holds at least II-IV
        (I and V when found), axes in ``(row, col)`` pixels of ``image_bone_bright``.
        ``bone_refusals`` names bones of II-IV that must not be measured (metal in the ROI).
    """
    image = np.asarray(image_bone_bright, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 16 or not np.isfinite(pixel_spacing_mm) or pixel_spacing_mm <= 0:
        return _refuse("not_pa_hand", "The image is not a single-frame greyscale radiograph.")
    if min(image.shape) // _work_factor(pixel_spacing_mm) < 16:
        # The working copy would be (nearly) empty: the image spans a few mm, no hand fits.
        side_mm = min(image.shape) * pixel_spacing_mm
        return _refuse("not_pa_hand", f"The image is only {side_mm:.3g} mm across; too small to hold a hand.")
    w = _prepare(image, pixel_spacing_mm)
    details: dict = {"working_spacing_mm": round(w.spacing_mm, 3)}
    outline = _outline(w.body, w.factor)
    body_area_mm2 = float(w.body.sum()) * w.spacing_mm**2
    details["body_area_cm2"] = round(body_area_mm2 / 100.0, 1)
    if body_area_mm2 < MIN_HAND_AREA_MM2 * min(HAND_SCALES) ** 2:
        return _refuse("not_pa_hand", "No body part large enough to be a hand was found in the image.",
                       outline_rc=outline, details=details)
    # Fingers are 10-25 mm thick depending on the hand and on the (possibly assumed) pixel
    # size: try a few opening radii, keep the first that shows five fingers, else the most.
    cluster: list[_Finger] = []
    body_dist = distance_to_background(w.body)
    trials = [(radius_mm * scale, scale) for scale in HAND_SCALES for radius_mm in FINGER_RADII_MM]
    for radius_mm, scale in trials:
        if radius_mm / w.spacing_mm < 2.0:
            continue  # narrower than the working pixels can show
        fingers, _palm = _find_fingers(w.body, w.spacing_mm, radius_mm, body_dist)
        fingers = [f for f in fingers if f.length_px * w.spacing_mm >= 0.5 * scale * FINGER_MIN_LENGTH_MM]
        candidate = _finger_cluster(fingers)
        if len(candidate) > len(cluster) and len(candidate) <= 5:
            cluster = candidate
            details["finger_radius_mm"] = round(radius_mm, 1)
            details["hand_scale"] = scale
        if len(cluster) == 5:
            break
    if len(cluster) < 4:
        loc = _non_pa_view(w, cluster, details)
        loc.outline_rc = outline
        return loc
    u, v, ordered, info = _thumb_and_axis(cluster, w.body)
    details.update(info)
    thumb = ordered[0] if info.get("thumb_from") == "finger" else None
    four = (ordered[1:] if thumb is not None else ordered)[:4]
    if len(four) == 3 and thumb is not None:
        # The thumb and three fingers: the fourth is bent, hidden behind a neighbour or too short
        # to leave the palm. Its place is predicted from the others; the shaft lines below are
        # then fitted to the bone ridges, and the PA checks judge the result.
        four = _complete_fingers(four, v)
        details["fingers_predicted"] = 1
    if len(four) < 4:
        loc = _non_pa_view(w, cluster, details)
        loc.outline_rc = outline
        return loc
    bases = np.array([f.base_rc for f in four])
    s = float(np.median(np.abs(np.diff(bases @ v))))
    details["finger_spacing_mm"] = round(s * w.spacing_mm, 1)
    if s < 3:
        return _refuse("bone_not_found", outline_rc=outline, details=details)
    frame = _HandFrame(bases.mean(axis=0) - 2.2 * s * u, u, v, (int(8.5 * s), int(7 * s)))
    canon = frame.sample(w.g)
    fb = np.array(frame.from_work(bases[:, 0], bases[:, 1])).T
    tips = np.array([f.tip_rc for f in four])
    ft = np.array(frame.from_work(tips[:, 0], tips[:, 1])).T
    fd = ft - fb
    fd /= np.hypot(fd[:, 0], fd[:, 1])[:, None] + 1e-12
    bone = _tophat(canon, int(round(0.7 * s)))
    ridge = _ridge_x(bone, 0.25 * s, RIDGE_SIGMA * s)
    # Wider top-hat for the joint spaces: the 0.7 s one flattens the broad metacarpal heads.
    bone_wide = _tophat(canon, int(round(HEAD_TOPHAT * s)))
    fit = _fit_shaft_lines(ridge, fb, fd, s, bone)
    if fit is None:
        return _refuse("bone_not_found", outline_rc=outline, details=details)
    lines, support, rms, _ = fit
    details["shaft_support"] = [round(float(x), 2) for x in support]
    details["shaft_rms_px"] = [round(float(x), 2) if np.isfinite(x) else None for x in rms]
    names = ("II", "III", "IV", "V")
    found: dict[str, MetacarpalAxis] = {}
    y_mid = float(np.median(fb[:, 0]) + 1.6 * s)
    xs_mid = lines[:, 0] + lines[:, 1] * y_mid
    details["shaft_gaps_spacing"] = [round(float(x), 2) for x in (xs_mid[:-1] - xs_mid[1:]) / s]
    ys = np.arange(0.0, canon.shape[0] - 1.0, 0.5)
    # Metal over a shaft: along its line something several times brighter than the shaft.
    metal_suspect = set()
    for k, name in enumerate(names):
        a, b = lines[k]
        along_y = ys[(ys > fb[k, 0] + 0.3 * s) & (ys < fb[k, 0] + 4.0 * s)]
        if along_y.size < 5:
            continue
        centre = _along(canon, a, b, along_y, 1.0)
        level = float(np.median(centre))
        if level > 0 and float(np.max(centre)) > METAL_ALONG_RATIO * level:
            metal_suspect.add(name)
    details["metal_suspect"] = sorted(metal_suspect)

    def fine_for(k: int):
        a, b = lines[k]
        return _fine_profile_sampler(image, frame, w.factor, a, b, pixel_spacing_mm)

    def trace_ends(length_per_spacing: float) -> dict[str, tuple[float, float]]:
        out = {}
        for k, name in enumerate(names):
            if support[k] < 0.5 or not np.isfinite(rms[k]):
                continue
            a, b = lines[k]
            prof = ndi.gaussian_filter1d(_along(bone_wide, a, b, ys, 1.0), 1.0)
            raw = ndi.gaussian_filter1d(_along(canon, a, b, ys, HEAD_BAND * s), 1.0)
            rprof = ndi.gaussian_filter1d(_along(ridge, a, b, ys, 1.0), 2.0)
            ends = _ends_along(ys, prof, raw, rprof, float(fb[k, 0]), s, _RELATIVE_LENGTH[name], fine_for(k),
                               length_per_spacing)
            if ends is not None:
                out[name] = (ends[0], ends[1])
        return out

    def axis_of(name: str, head_y: float, base_y: float) -> MetacarpalAxis:
        k = names.index(name)
        a, b = lines[k]
        head_rc = _to_image_rc(frame, w.factor, head_y, a + b * head_y)
        base_rc = _to_image_rc(frame, w.factor, base_y, a + b * base_y)
        length_mm = float(np.hypot(head_rc[0] - base_rc[0], head_rc[1] - base_rc[1])) * pixel_spacing_mm
        conf = float(np.clip(support[k], 0, 1) * np.exp(-max(rms[k] - 1.0, 0.0) / 2.0))
        return MetacarpalAxis(name, base_rc, head_rc, length_mm, None, conf)

    image_max = float(np.max(image))  # once, not per bone and per candidate scale

    def with_metal(ends: dict) -> set[str]:
        out = set()
        for n, (hd, bs) in ends.items():
            ax = axis_of(n, hd, bs)
            if n != "V" and has_foreign_object(image, ax.base_rc, ax.head_rc, pixel_spacing_mm, image_max):
                out.add(n)
        return out

    ends_by_bone = trace_ends(_LENGTH_PER_SPACING)
    metal = with_metal(ends_by_bone) | metal_suspect
    # The finger spacing predicts the bone length only to 10-30 % (it depends on the hand and on
    # how it was laid down). The carpometacarpal joint lines of II-V, however, must agree on one
    # hand scale (the bones' relative lengths are nearly fixed): try every scale, score it by
    # the joint lines found where it puts the bases, keep the best. Bones under metal do not
    # vote (the metal's edges look like joint lines).
    # Ossified carpus? Judged behind the first-pass bases (a young child's unossified carpus
    # offers no joint lines, so the scale search below would wander into the forearm).
    inside = frame.sample(((w.body) & ~w.bands).astype(float), order=0) > 0.5
    carpus = _carpal_fill(canon, lines, ends_by_bone, names, inside)
    details["carpal_fill"] = None if carpus is None else round(carpus, 2)
    details["maturity"] = None if carpus is None else ("immature" if carpus < CARPAL_FILL_MIN else "adult")
    if carpus is not None and carpus < CARPAL_FILL_MIN:
        return _refuse("immature_skeleton", "The carpal bones are mostly not yet ossified (a young child's "
                       "hand): DXR-BMD is only defined for adults.", view="PA", outline_rc=outline, details=details)
    # PA: II-V side by side, each separated from the next by soft tissue. Two or more of II-IV
    # without a clean shaft ridge while the fingers are all apart: the shafts overlap, as on an
    # oblique view.
    gaps = (xs_mid[:-1] - xs_mid[1:]) / s
    poorly_traced = sum(1 for k in range(3) if support[k] < 0.5)
    if np.any(gaps < 0.45) or poorly_traced >= 2:
        return _refuse("oblique_view", view="oblique", outline_rc=outline, details=details)
    ends_by_bone = _bases_by_scale(ends_by_bone, {n: fine_for(names.index(n)) for n in ends_by_bone},
                                   s, exclude=metal, details=details)
    for name in names:
        if name in ends_by_bone:
            found[name] = axis_of(name, *ends_by_bone[name])
    missing = [n for n in ("II", "III", "IV") if n not in found]
    if missing:
        return _refuse("bone_not_found", f"Metacarpal {', '.join(missing)} could not be traced.",
                       view="PA", outline_rc=outline, details=details)
    # Every measured bone must lie wholly in the field: both ends inside the image and on the hand.
    margin_px = 1.0 / pixel_spacing_mm
    rows_img, cols_img = image.shape
    cut = []
    for name in ("II", "III", "IV"):
        for r, c in (found[name].base_rc, found[name].head_rc):
            # On the hand: within a third of a finger spacing of the body mask (a head traced a
            # little to the side lands in the web between two fingers; a bone cut by the field
            # edge or a collimator band ends far from any tissue).
            rw, cw = _work_index(r, w.factor), _work_index(c, w.factor)
            reach = max(1, int(round(s / 3.0)))
            near = w.body[max(0, rw - reach) : rw + reach + 1, max(0, cw - reach) : cw + reach + 1]
            on_hand = 0 <= rw < w.body.shape[0] and 0 <= cw < w.body.shape[1] and bool(near.any())
            if not (margin_px <= r < rows_img - margin_px and margin_px <= c < cols_img - margin_px) or not on_hand:
                cut.append(name)
                break
    if cut:
        details["cut_by_field"] = cut
        details["cut_axes"] = {n: (tuple(round(x) for x in found[n].base_rc), tuple(round(x) for x in found[n].head_rc)) for n in found}
        return _refuse("bone_not_found", f"Metacarpal {', '.join(cut)} is not wholly inside the image.",
                       view="PA", outline_rc=outline, details=details)
    bone_refusals = {
        n: ("foreign_object_in_roi", REASON_MESSAGES["foreign_object_in_roi"])
        for n in sorted((with_metal(ends_by_bone) | metal_suspect) - {"V"})
    }
    details["metal_over"] = sorted(bone_refusals)
    if thumb is not None:
        try:
            axis_i = _thumb_metacarpal(image, w, thumb, s, details.get("length_per_spacing", _LENGTH_PER_SPACING),
                                       pixel_spacing_mm)
        except (ValueError, IndexError):  # display only: never let the thumb cost the result
            axis_i = None
        if axis_i is not None:
            found = {"I": axis_i, **found}
    loc = HandLocation(view="PA", metacarpals=found, bone_refusals=bone_refusals, outline_rc=outline,
                       details=details, fingers_direction_rc=(float(u[0]), float(u[1])))
    loc.confidence = float(np.mean([found[n].confidence for n in ("II", "III", "IV")]))
    return loc
