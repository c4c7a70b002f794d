"""Synthetic radiographs with known bone geometry, for the analysis and node tests.

API (pixel points are ``(column, row)``; lengths in mm)::

    from tests.phantom import make_hand, make_dataset, make_non_hand

    image, truth = make_hand(seed=0, spacing_mm=0.1, blur_sigma_mm=0.1, noise=0.01,
                             rotation_deg=0.0, laterality="L", fingers="up",
                             shape_px=None, field_mm=(240, 180), view="PA",
                             skeleton="adult", metal_over=None, repeat=None,
                             cortical_scale=1.0)
    # image: float64 (rows, cols), bone bright, = -ln(detected exposure) (attenuation line integral)
    # truth: PhantomTruth; truth.bones["III"].cortical_thickness_mm / .outer_width_mm /
    #        .length_mm / .base_px / .head_px ; truth.axis("III") -> object with
    #        .base_rc, .head_rc (row, col) and .length_mm (what analysis.measure.measure_bone takes)

    ds = make_dataset(image, truth, modality="CR", photometric="MONOCHROME2", bits_stored=12,
                      spacing_attribute="PixelSpacing", patient_name="Test^Hand", sex="F",
                      age="062Y", laterality="L", study_uid=None)   # or make_dataset(seed=3, ...)
    ds.save_as(path, enforce_file_format=True)

    image, truth = make_hand(seed=0, repeat=k)   # same hand, repositioned (shift/rotation), new noise
    image, truth = make_hand(view="lateral")     # or "oblique": for the view refusals
    image, truth = make_hand(skeleton="child")   # open growth plates
    image, truth = make_hand(metal_over="III")   # a metal plate across III's mid-shaft
    image, truth = make_hand(unsharp=(1.0, 1.0)) # vendor edge enhancement (radius mm, amount)
    image, truth = make_hand(blur_domain="attenuation")  # blur after the log (no detector nonlinearity)
    image = make_non_hand(seed=0)                # a knee-like radiograph, no hand in it

    # Variations hospitals' films show (all off by default; see make_hand's docstring):
    make_hand(collimator="white", collimator_mm=(20, 0, 15, 15))  # unexposed bands (mm) t, b, l, r
    make_hand(collimator="black")                # electronic shutter bands, 15 mm each side
    make_hand(display="gamma:0.6")               # linear|log|gamma[:G]|sigmoid|equalized (12 bit)|edge8 (8 bit)
    make_hand(rotation_deg=-180.0, field_mm=(260, 260))  # any angle; choose a field that holds it
    make_hand(fingers="left", field_mm=(180, 240))       # up|down|left|right
    make_hand(spacing_mm=0.05)                   # 0.05..0.25 mm: 4800 x 3600 px in ~5 s, 0.5 GB
    make_hand(side_marker="R", text_label=True)  # lead letter + burned-in text in empty corners
    make_hand(rings=("III", "IV"))               # gold rings half-way along the proximal phalanges
    make_hand(wrist_metal="watch")               # or "bracelet": on the distal forearm
    make_hand(second_hand_mm=-150, field_mm=(240, 330), shift_mm=(75, 0))  # both hands on one film
    make_hand(soft_tissue_scale=0.3)             # faint (0.3) or strong (1.8) soft tissue
    make_hand(finger_spread_deg=-4.0)            # fingers together (< 0) or spread (> 0), degrees
    make_hand(thumb_angle_deg=15.0)              # thumb metacarpal angle from the long axis (default 30)
    location = truth_location(truth)             # analysis.locate.HandLocation from the known axes

Physics. Every bone is a hollow tube (cortex around a marrow canal) whose radius varies slowly
along its axis, so a ray at perpendicular distance ``d`` crosses ``2*sqrt(R^2 - d^2)`` of bone
and ``2*sqrt(r^2 - d^2)`` of marrow. The five metacarpals have a constant outer width W and
cortical thickness T over their middle 40 % (where DXR measures) and flare towards base and
head with thinner cortex. Phalanges, carpals, radius and ulna are simpler shapes; soft tissue
is a smooth thickness map. The detected exposure ``exp(-sum mu*path)`` is averaged over the
pixel area (3 x 3 sub-samples on the metacarpals), blurred by a Gaussian detector PSF
(``blur_sigma_mm``), and given Gaussian quantum noise of standard deviation
``noise*sqrt(exposure)`` (``noise`` is the relative noise of an unattenuated pixel).
The image returned is ``-ln(exposure)``: bright bone, as a processed CR/DX image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

# Linear attenuation coefficients in 1/mm at a hand-radiography spectrum (~40 keV effective),
# given relative to soft tissue because bone displaces tissue.
MU_SOFT_TISSUE = 0.022
MU_CORTEX = 0.16
MU_MARROW_SHAFT = 0.004
MU_TRABECULAR = 0.030
MU_METAL = 3.0

HAND_ANCHOR_MM = (0.0, 80.0)
NON_PA_ANCHOR_SHIFT_MM = 12.0
"""How much further along the hand (mm) the image centre sits for oblique and lateral views."""
"""The hand point (u, v) that lands at the image centre; u points to the thumb, v distally."""


@dataclass(frozen=True)
class TruthAxis:
    """A metacarpal axis as ``analysis.locate`` reports it: ``(row, col)`` points, mm length."""

    base_rc: tuple[float, float]
    head_rc: tuple[float, float]
    length_mm: float


@dataclass
class BoneTruth:
    name: str
    cortical_thickness_mm: float
    outer_width_mm: float
    length_mm: float
    base_px: tuple[float, float]
    """Proximal end on the axis, ``(column, row)``."""
    head_px: tuple[float, float]
    """Distal end on the axis, ``(column, row)``."""

    @property
    def mid_px(self) -> tuple[float, float]:
        return ((self.base_px[0] + self.head_px[0]) / 2, (self.base_px[1] + self.head_px[1]) / 2)


@dataclass
class PhantomTruth:
    bones: dict[str, BoneTruth]
    """Metacarpals ``I``..``V`` (numbered from the thumb)."""
    spacing_mm: float
    blur_sigma_mm: float
    noise: float
    rotation_deg: float
    laterality: str
    fingers: str
    view: str
    skeleton: str
    shape: tuple[int, int]
    metal_over: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def axis(self, name: str) -> TruthAxis:
        b = self.bones[name]
        return TruthAxis(
            base_rc=(b.base_px[1], b.base_px[0]), head_rc=(b.head_px[1], b.head_px[0]), length_mm=b.length_mm
        )


# ----------------------------------------------------------------------------- hand anatomy
# name: (base (u, v), head (u, v), W, T) in mm for a medium adult female hand.
_METACARPALS = {
    "I": ((21.0, 23.0), None, 9.0, 2.2),  # head from length + angle below
    "II": ((13.0, 31.0), (20.0, 97.5), 8.4, 2.1),
    "III": ((2.0, 30.0), (4.5, 93.5), 8.0, 2.0),
    "IV": ((-9.0, 28.0), (-13.5, 84.5), 6.8, 1.7),
    "V": ((-19.5, 26.0), (-28.0, 78.0), 7.0, 1.6),
}
_THUMB_LENGTH_MM = 45.0
_THUMB_ANGLE_DEG = 30.0  # away from the index finger
# (proximal, middle, distal) phalanx lengths per finger; the thumb has no middle phalanx.
_PHALANGES = {"I": (31.0, 0.0, 23.0), "II": (40.0, 23.0, 17.0), "III": (44.0, 27.0, 18.0),
              "IV": (41.0, 26.0, 18.0), "V": (33.0, 18.0, 16.0)}
_FINGER_SPREAD_DEG = {"I": 0.0, "II": 5.0, "III": 1.5, "IV": -2.5, "V": -7.0}
_FINGER_RANK = {"II": 1.0, "III": 0.0, "IV": -1.0, "V": -2.0}  # towards the thumb > 0
_FINGERS_THETA_DEG = {"up": 0.0, "down": 180.0, "left": 90.0, "right": -90.0}
"""Extra rotation (counter-clockwise on the display) for each ``fingers`` direction."""
_CARPALS = [  # centre (u, v), semi-axes (a along u, b along v), thickness in mm
    ((13.0, 21.0), (6.5, 5.0), 11.0),  # trapezoid
    ((23.0, 16.0), (6.0, 5.5), 12.0),  # trapezium
    ((1.0, 20.0), (6.5, 7.5), 14.0),  # capitate
    ((-11.0, 19.0), (7.0, 6.5), 13.0),  # hamate
    ((12.0, 8.0), (8.0, 5.5), 13.0),  # scaphoid
    ((-1.0, 6.0), (6.5, 5.5), 13.0),  # lunate
    ((-13.0, 8.0), (5.0, 5.0), 11.0),  # triquetrum
    ((-17.0, 13.0), (3.5, 3.5), 8.0),  # pisiform
]


@dataclass
class _LongBone:
    name: str
    base: np.ndarray  # (u, v) mm
    head: np.ndarray
    width_mm: float
    thickness_mm: float
    base_flare: float = 1.45  # base width / W
    head_flare: float = 1.35  # head width / W
    metacarpal: bool = False
    growth_plate_at: float | None = None  # fraction of L where an open physis (gap) sits
    canal_offset_mm: float = 0.0  # canal shifted towards +normal: walls T + offset and T - offset

    @property
    def length_mm(self) -> float:
        return float(np.hypot(*(self.head - self.base)))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _tube_radii(bone: _LongBone, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outer radius, inner radius (mm) and flare weight (0 shaft .. 1 end) at axial position s (mm)."""
    L, W, T = bone.length_mm, bone.width_mm, bone.thickness_mm
    R0 = W / 2
    Rb, Rh = bone.base_flare * R0, bone.head_flare * R0
    a1, a2 = 0.30 * L, 0.70 * L  # constant shaft between a1 and a2
    wb = _smoothstep((a1 - s) / (a1 - 0.06 * L))
    wh = _smoothstep((s - a2) / max(L - Rh - a2, 1e-6))
    R = R0 + (Rb - R0) * wb + (Rh - R0) * wh
    # Rounded head (a half disc of radius Rh) and a slightly rounded base.
    cap_h = s > L - Rh
    R = np.where(cap_h, Rh * np.sqrt(np.clip(1.0 - ((s - (L - Rh)) / Rh) ** 2, 0.0, 1.0)), R)
    cb = 1.5
    cap_b = s < cb
    R = np.where(cap_b, R * np.sqrt(np.clip(1.0 - ((cb - s) / cb) ** 2, 0.0, 1.0)), R)
    R = np.where((s < 0) | (s > L), 0.0, R)
    flare = np.maximum(wb, wh)
    t = T * (1.0 - 0.65 * flare)
    r = np.clip(R - t, 0.0, None)
    return R, r, flare


def _tube_attenuation(bone: _LongBone, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Line integral of attenuation (relative to soft tissue) through a hollow tube, unitless."""
    d_axis = (bone.head - bone.base) / bone.length_mm
    du, dv = u - bone.base[0], v - bone.base[1]
    s = du * d_axis[0] + dv * d_axis[1]
    d = -du * d_axis[1] + dv * d_axis[0]
    R, r, flare = _tube_radii(bone, s)
    outer = 2.0 * np.sqrt(np.clip(R * R - d * d, 0.0, None))
    # An eccentric canal (unequal walls) on the shaft, centred again towards the ends.
    dc = d - bone.canal_offset_mm * (1.0 - flare)
    inner = 2.0 * np.sqrt(np.clip(r * r - dc * dc, 0.0, None))
    mu_marrow = MU_MARROW_SHAFT + (MU_TRABECULAR - MU_MARROW_SHAFT) * flare
    att = MU_CORTEX * (outer - inner) + mu_marrow * inner
    if bone.growth_plate_at is not None:
        # An open physis: a 1.2 mm radiolucent cartilage band across the bone.
        sp = bone.growth_plate_at * bone.length_mm
        att = np.where(np.abs(s - sp) < 0.6, 0.0, att)
    return att


def _hand_bones(rng: np.random.Generator, *, cortical_scale: float, skeleton: str, view: str,
                wall_asymmetry: float = 0.0, finger_spread_deg: float = 0.0,
                thumb_angle_deg: float | None = None):
    size = rng.uniform(0.94, 1.06)
    squeeze = {"PA": 1.0, "oblique": 0.45, "lateral": 0.08}[view]
    child = skeleton == "child"
    if child:
        size *= 0.62

    def uv(p):
        return np.array([p[0] * squeeze * size, p[1] * size])

    metacarpals: dict[str, _LongBone] = {}
    phalanges: list[_LongBone] = []
    for name, (base, head, W, T) in _METACARPALS.items():
        W_i = W * size * rng.uniform(0.95, 1.05)
        T_i = T * size * rng.uniform(0.9, 1.1) * cortical_scale
        b = uv(base)
        if head is None:  # the thumb: shorter, angled away from the fingers
            ang = math.radians(_THUMB_ANGLE_DEG if thumb_angle_deg is None else thumb_angle_deg)
            L = _THUMB_LENGTH_MM * size * rng.uniform(0.97, 1.03)
            h = b + L * np.array([math.sin(ang) * squeeze, math.cos(ang)])
            h = b + (h - b) * L / np.hypot(*(h - b))
        else:
            h = uv(head)
            h = b + (h - b) * rng.uniform(0.97, 1.03)
        metacarpals[name] = _LongBone(
            name, b, h, W_i, T_i, metacarpal=True,
            # Metacarpal II-V physes are at the head, the thumb's at its base.
            growth_plate_at=(0.12 if name == "I" else 0.86) if child else None,
            canal_offset_mm=wall_asymmetry * T_i / 2,
        )
        # Phalanges continue along the metacarpal direction with small joint gaps.
        # Fingers fan out a little more than their metacarpals, so they do not touch.
        spread_deg = _FINGER_SPREAD_DEG[name]
        if finger_spread_deg and name != "I":
            # Extra fanning between neighbouring fingers, about the middle finger (III).
            spread_deg += finger_spread_deg * _FINGER_RANK[name]
        spread = math.radians(spread_deg)
        ang = math.atan2(h[0] - b[0], h[1] - b[1]) + spread
        direction = np.array([math.sin(ang) * (squeeze if name != "I" else 1.0), math.cos(ang)])
        direction /= np.hypot(*direction)
        start = h + 1.5 * direction
        prox, mid, dist = _PHALANGES[name]
        for k, length in enumerate((prox, mid, dist)):
            if length == 0.0:
                continue
            length *= size
            wk = W_i * (0.85, 0.7, 0.6)[k]
            end = start + length * direction
            phalanges.append(_LongBone(f"{name}-p{k}", start.copy(), end, wk, 0.28 * wk,
                                       base_flare=1.35, head_flare=1.15 if k < 2 else 0.9,
                                       growth_plate_at=0.08 if child else None))
            start = end + 1.5 * direction
    forearm = [
        _LongBone("radius", uv((9.0, -90.0)), uv((9.0, 1.0)), 16.0 * size, 3.0 * size, 1.0, 1.6,
                  growth_plate_at=0.9 if child else None),
        _LongBone("ulna", uv((-17.0, -90.0)), uv((-17.0, -2.0)), 12.0 * size, 2.8 * size, 1.0, 1.3,
                  growth_plate_at=0.9 if child else None),
    ]
    carpals = [(uv(c), (a * size * squeeze, b * size), t * size) for c, (a, b), t in _CARPALS]
    if child:  # a young child has only a few small ossification centres in the carpus
        carpals = [(c, (0.5 * a, 0.5 * b), 0.5 * t) for c, (a, b), t in carpals[2:4]]
    return metacarpals, phalanges, forearm, carpals, size


def _soft_tissue_thickness(metacarpals, phalanges, forearm, size, view, u, v):
    """Soft-tissue thickness (mm): a flat-topped palm, rounded fingers, the forearm."""
    t = np.zeros_like(u)

    def capsule(p0, p1, radius, cap):
        d01 = p1 - p0
        ln2 = float(d01 @ d01)
        s = np.clip(((u - p0[0]) * d01[0] + (v - p0[1]) * d01[1]) / ln2, 0.0, 1.0)
        dx = u - (p0[0] + s * d01[0])
        dy = v - (p0[1] + s * d01[1])
        return np.minimum(2.0 * np.sqrt(np.clip(radius * radius - dx * dx - dy * dy, 0.0, None)), cap)

    outline = []  # palm outline points (u, v): wrist, ulnar and radial borders, finger webs
    webs = {}
    for name, mc in metacarpals.items():
        tip = [p for p in phalanges if p.name.startswith(name + "-")][-1].head
        direction = (tip - mc.head) / np.hypot(*(tip - mc.head))
        r = (10.0 if name == "I" else 7.0 if name != "V" else 6.5) * size
        t = np.maximum(t, capsule(mc.head, tip + 2.0 * direction, r, 2 * r))
        if name == "I":
            t = np.maximum(t, capsule(mc.base, mc.head, r + 2.0 * size, 24.0 * size))  # thenar
        else:
            # The palm reaches past the MCP joints: the finger webs lie about 40 % along the
            # proximal phalanges.
            webs[name] = mc.head + 0.4 * _PHALANGES[name][0] * size * direction
    side = np.array([1.0, 0.0])
    mc2, mc5 = metacarpals["II"], metacarpals["V"]
    outline += [webs["II"] + 7.0 * size * side, mc2.head + (mc2.width_mm / 2 + 5.0 * size) * side,
                mc2.base + (mc2.width_mm / 2 + 9.0 * size) * side]
    outline += [(webs[a] + webs[b]) / 2 for a, b in (("II", "III"), ("III", "IV"), ("IV", "V"))]
    outline += [webs["V"] - 6.0 * size * side, mc5.head - (mc5.width_mm / 2 + 5.0 * size) * side,
                mc5.base - (mc5.width_mm / 2 + 5.0 * size) * side]
    wrist_u = [forearm[1].head[0] - forearm[1].width_mm / 2 - 4.0 * size,
               forearm[0].head[0] + forearm[0].width_mm / 2 + 4.0 * size]
    outline += [np.array([wrist_u[0], 0.0]), np.array([wrist_u[1], 0.0])]
    t = np.maximum(t, _rounded_slab(np.array(outline), u, v, thickness=26.0 * size, ramp=11.0 * size))
    mid = (forearm[0].head + forearm[1].head) / 2
    t = np.maximum(t, capsule(mid - np.array([0.0, 120.0]), mid + np.array([0, 20.0]) * size,
                              34.0 * size, 36.0 * size))
    return t


def _rounded_slab(points: np.ndarray, u: np.ndarray, v: np.ndarray, thickness: float, ramp: float) -> np.ndarray:
    """Thickness of a slab over the convex hull of ``points`` (mm) with rounded edges ``ramp`` wide."""
    from scipy.spatial import ConvexHull

    hull = ConvexHull(points)
    # hull.equations rows are (nx, ny, offset) with n.x + offset <= 0 inside.
    outside = np.full(u.shape, -np.inf)
    for nx, ny, off in hull.equations:
        outside = np.maximum(outside, nx * u + ny * v + off)
    depth = np.clip(-outside / ramp, 0.0, 1.0)
    return thickness * np.sqrt(np.clip(1.0 - (1.0 - depth) ** 2, 0.0, 1.0))


class _Frame:
    """Affine map between hand coordinates (u, v) in mm and pixel (col, row)."""

    def __init__(self, shape, spacing_mm, rotation_deg, laterality, fingers, shift_mm=(0.0, 0.0),
                 anchor_mm=HAND_ANCHOR_MM):
        rows, cols = shape
        self.spacing = spacing_mm
        theta = math.radians(rotation_deg + _FINGERS_THETA_DEG[fingers])
        mirror = 1.0 if laterality == "L" else -1.0
        # Counter-clockwise on the displayed image (rows point down).
        rot = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
        self.A = rot @ np.diag([mirror, -1.0]) / spacing_mm  # (u, v) mm -> (col, row) px
        self.Ainv = np.linalg.inv(self.A)
        self.c = np.array([(cols - 1) / 2 + shift_mm[0] / spacing_mm, (rows - 1) / 2 + shift_mm[1] / spacing_mm])
        self.anchor = np.array(anchor_mm)

    def to_px(self, uv) -> np.ndarray:
        return self.A @ (np.asarray(uv, float) - self.anchor) + self.c

    def to_uv(self, col, row) -> tuple[np.ndarray, np.ndarray]:
        x, y = col - self.c[0], row - self.c[1]
        u = self.Ainv[0, 0] * x + self.Ainv[0, 1] * y + self.anchor[0]
        v = self.Ainv[1, 0] * x + self.Ainv[1, 1] * y + self.anchor[1]
        return u, v


def _add_tube(att: np.ndarray, frame: _Frame, bone: _LongBone, supersample: int) -> None:
    """Add a tube's pixel-averaged attenuation to ``att`` in place (only near the bone)."""
    rows, cols = att.shape
    rmax = max(bone.base_flare, bone.head_flare, 1.0) * bone.width_mm / 2 + 1.0
    ends = np.array([frame.to_px(bone.base), frame.to_px(bone.head)])
    pad = rmax / frame.spacing + 2
    c0, r0 = np.floor(ends.min(axis=0) - pad).astype(int)
    c1, r1 = np.ceil(ends.max(axis=0) + pad).astype(int)
    c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, cols - 1), min(r1, rows - 1)
    if c1 < c0 or r1 < r0:
        return
    rr, cc = np.mgrid[r0 : r1 + 1, c0 : c1 + 1]
    rr, cc = rr.ravel().astype(float), cc.ravel().astype(float)
    u, v = frame.to_uv(cc, rr)
    d_axis = (bone.head - bone.base) / bone.length_mm
    s = (u - bone.base[0]) * d_axis[0] + (v - bone.base[1]) * d_axis[1]
    d = -(u - bone.base[0]) * d_axis[1] + (v - bone.base[1]) * d_axis[0]
    near = (s > -1.0) & (s < bone.length_mm + 1.0) & (np.abs(d) < rmax + frame.spacing)
    rr, cc = rr[near], cc[near]
    total = np.zeros(rr.shape)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    for oy in offsets:
        for ox in offsets:
            uu, vv = frame.to_uv(cc + ox, rr + oy)
            total += _tube_attenuation(bone, uu, vv)
    att[rr.astype(int), cc.astype(int)] += total / supersample**2


def _shell_attenuation(u: np.ndarray, v: np.ndarray, centre, direction, r_in: float, r_out: float,
                       half_length: float, mu: float) -> np.ndarray:
    """Line integral through a metal band (a short hollow cylinder, axis ``direction`` in the
    image plane, e.g. a ring around a finger): ``mu * 2 (sqrt(Ro^2 - d^2) - sqrt(Ri^2 - d^2))``
    within ``half_length`` mm of ``centre`` along the axis, ``d`` the distance from the axis."""
    du, dv = u - centre[0], v - centre[1]
    along = du * direction[0] + dv * direction[1]
    d = -du * direction[1] + dv * direction[0]
    path = 2.0 * (np.sqrt(np.clip(r_out * r_out - d * d, 0.0, None)) - np.sqrt(np.clip(r_in * r_in - d * d, 0.0, None)))
    return np.where(np.abs(along) <= half_length, mu * path, 0.0)


def _add_local(att: np.ndarray, frame: _Frame, centre_uv, radius_mm: float, fn) -> tuple[int, int, int, int] | None:
    """Add ``fn(u, v)`` to ``att`` within ``radius_mm`` of ``centre_uv``; returns the box
    ``(r0, r1, c0, c1)`` touched (None when outside the image)."""
    rows, cols = att.shape
    cpx = frame.to_px(centre_uv)
    rad = radius_mm / frame.spacing + 2
    r0, r1 = int(max(cpx[1] - rad, 0)), int(min(cpx[1] + rad, rows - 1))
    c0, c1 = int(max(cpx[0] - rad, 0)), int(min(cpx[0] + rad, cols - 1))
    if r1 <= r0 or c1 <= c0:
        return None
    rr, cc = np.mgrid[r0:r1, c0:c1]
    uu, vv = frame.to_uv(cc.astype(float), rr.astype(float))
    att[r0:r1, c0:c1] += fn(uu, vv)
    return (r0, r1, c0, c1)


def _render_hand(att: np.ndarray, frame: _Frame, metacarpals, phalanges, forearm, carpals) -> None:
    """Add the bones of one hand (metacarpals 3x3 supersampled, phalanges, forearm, carpals)."""
    for mc in metacarpals.values():
        _add_tube(att, frame, mc, supersample=3)
    for bone in phalanges + forearm:
        _add_tube(att, frame, bone, supersample=1)
    for centre, (a, b), thick in carpals:
        def carpal(uu, vv, centre=centre, a=a, b=b, thick=thick):
            rho2 = ((uu - centre[0]) / a) ** 2 + ((vv - centre[1]) / b) ** 2
            return MU_TRABECULAR * 1.6 * thick * np.sqrt(np.clip(1.0 - rho2, 0.0, None))

        _add_local(att, frame, centre, max(a, b), carpal)


# A 5 x 7 pixel font for the side letters (lead markers).
_GLYPHS = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
}


def _glyph_mask(rows: list[str], cell_px: float) -> np.ndarray:
    """A boolean bitmap (strings of 0/1) scaled to ``cell_px`` pixels per bitmap pixel."""
    bits = np.array([[c == "1" for c in row] for row in rows], bool)
    h, w = int(math.ceil(bits.shape[0] * cell_px)), int(math.ceil(bits.shape[1] * cell_px))
    ri = np.minimum((np.arange(h) / cell_px).astype(int), bits.shape[0] - 1)
    ci = np.minimum((np.arange(w) / cell_px).astype(int), bits.shape[1] - 1)
    return bits[np.ix_(ri, ci)]


def _text_bitmap(rng: np.random.Generator, lines: int = 2, chars: int = 12) -> list[str]:
    """Random 5 x 7 glyphs in ``lines`` lines of ``chars`` characters: looks like burned-in text."""
    out = []
    for _ in range(lines):
        glyphs = (rng.random((7, chars, 5)) < 0.45).astype(int)
        for r in range(7):
            out.append("".join("".join(map(str, glyphs[r, k])) + "0" for k in range(chars)))
        out.append("0" * (6 * chars))
    return out


def _free_corner(att: np.ndarray, size_px: tuple[int, int], margin_px: int, order: list[int],
                 taken: list[tuple[int, int, int, int]]) -> tuple[int, int]:
    """Top-left ``(row, col)`` of a ``size_px`` box in a corner with no body in it (the least
    attenuating corner when none is empty), trying corners in ``order`` (0 TL, 1 TR, 2 BL, 3 BR)."""
    rows, cols = att.shape
    h, w = size_px
    best, best_score = None, math.inf
    for k in order:
        r0 = margin_px if k < 2 else rows - margin_px - h
        c0 = margin_px if k % 2 == 0 else cols - margin_px - w
        r0, c0 = max(r0, 0), max(c0, 0)
        if any(not (r0 + h <= t[0] or t[1] <= r0 or c0 + w <= t[2] or t[3] <= c0) for t in taken):
            continue
        score = float(att[r0:r0 + h, c0:c0 + w].max(initial=0.0))
        if score < 0.02:  # under 1 mm of soft tissue: empty
            return r0, c0
        if score < best_score:
            best, best_score = (r0, c0), score
    if best is None:
        raise ValueError("no free corner for the marker")
    return best


DISPLAY_CURVES = ("linear", "log", "gamma", "sigmoid", "equalized", "edge8")
"""Names accepted by ``make_hand(display=...)``; ``gamma:G`` sets the exponent (default 0.5)."""


def _apply_display(image: np.ndarray, curve: str, lo: float, hi: float, spacing_mm: float,
                   field: np.ndarray) -> np.ndarray:
    """Map the log image (attenuation) onto display grey values, bone bright.

    ``lo``..``hi`` is the window the reader chose on the anatomy (air .. densest bone); what lies
    beyond it (metal, unexposed borders) saturates. 12-bit integer output (0..4095) except
    ``edge8`` (0..255); ``field`` marks the exposed field (the equalisation histogram).
    """
    x = np.clip((image - lo) / (hi - lo), 0.0, 1.0)
    name, _, arg = curve.partition(":")
    if name == "linear":
        # Grey linear in detected exposure (a raw detector signal), inverted so bone is bright.
        e_lo, e_hi = math.exp(-lo), math.exp(-hi)
        y = (e_lo - np.exp(-(lo + x * (hi - lo)))) / (e_lo - e_hi)
    elif name == "log":
        y = x  # grey linear in attenuation (log exposure)
    elif name == "gamma":
        y = x ** (float(arg) if arg else 0.5)
    elif name == "sigmoid":  # a film-like S-curve
        k = float(arg) if arg else 8.0
        s0, s1 = 1.0 / (1.0 + math.exp(k * 0.5)), 1.0 / (1.0 + math.exp(-k * 0.5))
        y = (1.0 / (1.0 + np.exp(-k * (x - 0.5))) - s0) / (s1 - s0)
    elif name == "equalized":
        levels = 4096
        q = np.minimum((x * levels).astype(int), levels - 1)
        hist = np.bincount(q[field].ravel(), minlength=levels).astype(float)
        cdf = np.cumsum(hist)
        cdf = (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0)
        y = cdf[q]
    elif name == "edge8":
        # Vendor edge enhancement (unsharp mask, 2 mm radius, amount 1) and a mild gamma,
        # then 8-bit quantisation.
        sigma = 2.0 / spacing_mm
        y = np.clip(x + 1.0 * (x - ndimage.gaussian_filter(x, sigma, mode="nearest")), 0.0, 1.0) ** 0.8
        return np.round(y * 255.0)
    else:
        raise ValueError(f"display must be one of {DISPLAY_CURVES} (or gamma:G), not {curve!r}")
    return np.round(np.clip(y, 0.0, 1.0) * 4095.0)


def make_hand(
    seed: int = 0,
    *,
    spacing_mm: float = 0.1,
    blur_sigma_mm: float = 0.1,
    noise: float = 0.01,
    rotation_deg: float = 0.0,
    laterality: str = "L",
    fingers: str = "up",
    shape_px: tuple[int, int] | None = None,
    field_mm: tuple[float, float] = (240.0, 180.0),
    view: str = "PA",
    skeleton: str = "adult",
    metal_over: str | None = None,
    repeat: int | None = None,
    cortical_scale: float = 1.0,
    shift_mm: tuple[float, float] = (0.0, 0.0),
    blur_domain: str = "exposure",
    unsharp: tuple[float, float] | None = None,
    wall_asymmetry: float = 0.0,
    soft_tissue_scale: float = 1.0,
    finger_spread_deg: float = 0.0,
    thumb_angle_deg: float | None = None,
    rings: tuple[str, ...] | str = (),
    wrist_metal: str | None = None,
    second_hand_mm: float | None = None,
    side_marker: str | None = None,
    text_label: bool = False,
    collimator: str | None = None,
    collimator_mm: float | tuple[float, float, float, float] = 15.0,
    display: str | None = None,
) -> tuple[np.ndarray, PhantomTruth]:
    """A synthetic hand radiograph with known metacarpal geometry.

    Parameters
    ----------
    seed : int
        Chooses the "person" (bone sizes vary a few per cent) and, with ``repeat=None``, the noise.
    spacing_mm : float
        Pixel size (mm).
    blur_sigma_mm : float
        Standard deviation of the Gaussian detector PSF (mm).
    noise : float
        Relative quantum noise of an unattenuated pixel (0 for none).
    rotation_deg : float
        In-plane rotation, counter-clockwise on the displayed image, about the image centre
        (any angle; the field is not enlarged, so choose ``field_mm`` to hold the rotated hand).
    laterality : {"L", "R"}
        Left hand PA has the thumb on the image right when fingers point up; right is its mirror.
    fingers : {"up", "down", "left", "right"}
        Direction the fingers point on the image (before ``rotation_deg``); ``left``/``right``
        are a hand lying sideways (use a landscape ``field_mm`` such as ``(180, 240)``).
    shape_px : (rows, columns), optional
        Size of the exposed field; default ``field_mm / spacing_mm``.
    view : {"PA", "oblique", "lateral"}
        Oblique and lateral squeeze the hand across, so the metacarpals overlap.
    skeleton : {"adult", "child"}
        ``child`` gives a small hand with open growth plates.
    metal_over : str, optional
        Put a metal plate across the mid-shaft of this metacarpal (e.g. ``"III"``).
    repeat : int, optional
        Repositioned acquisition ``k`` of the same hand: shift up to 4 mm, rotation up to 3
        degrees on top of ``rotation_deg``, fresh noise.
    cortical_scale : float
        Multiplies every cortical thickness (osteoporotic hands < 1).
    wall_asymmetry : float
        Relative difference of the two shaft walls: ``0.11`` makes one wall 11 % thicker than
        the other (as the radial cortex of MC II is, research 1.1); T stays their mean.
    unsharp : (radius_mm, amount), optional
        Vendor-style edge enhancement of the final image: ``image + amount * (image - G_radius * image)``.
    blur_domain : {"exposure", "attenuation"}
        ``exposure`` (physical: the detector blurs the x-ray fluence, the image is its log) or
        ``attenuation`` (blur applied after the log, as the measurement model assumes).

    Variations hospitals' films show (all off by default; the default image is unchanged):

    soft_tissue_scale : float
        Multiplies the soft-tissue attenuation (unitless): ``0.3`` faint (hard beam, strong
        processing), ``1.8`` strong (thick hand, soft beam).
    finger_spread_deg : float
        Extra angle (degrees) between neighbouring fingers II-V at the MCP joints, about III:
        ``> 0`` spread, ``< 0`` together (``-4`` makes the fingers touch). The metacarpals stay.
    thumb_angle_deg : float, optional
        Angle (degrees) of the thumb metacarpal from the hand's long axis (the direction from
        wrist to middle finger), towards the thumb side; default 30 (10-15 adducted, lying along
        the index .. 50-60 abducted).
    rings : tuple of str or str
        Fingers (``"II"``..``"V"``) wearing a ring: a gold band (inner radius = the finger's
        soft-tissue radius, 1.5 mm wall, 4 mm wide) half-way along the proximal phalanx.
        Never over the metacarpals. Centres in ``truth.extras["rings_px"]`` ``(col, row)``.
    wrist_metal : {"bracelet", "watch"}, optional
        A metal bracelet (1 mm wall, 6 mm wide) around the distal forearm 20 mm proximal to the
        radiocarpal joint, or a watch (an 18 mm metal strap and a 34 mm case, 6 mm of steel).
        Centre in ``truth.extras["wrist_metal_px"]``.
    second_hand_mm : float, optional
        A second hand (the other side: mirrored laterality, another seed) beside the first,
        its anchor this many mm along the image columns from the first's (signed; about
        +-150 puts the two side by side). Partial when it leaves the field. ``truth.bones``
        stays the first hand's; the second's are ``truth.extras["second_hand_bones"]``.
    side_marker : {"L", "R"}, optional
        A lead side letter (12 mm tall, strokes 1.7 mm, 2 mm of lead: saturated white) lying on
        the cassette in an empty corner of the field. Box in ``truth.extras["markers_px"]``.
    text_label : bool
        A burned-in text block (2 lines x 12 characters, 3 mm tall) at the display's maximum
        grey value, in another empty corner. Box in ``truth.extras["markers_px"]``.
    collimator : {"white", "black"}, optional
        Collimator bands added around the exposed field (the image grows by them): ``white``
        = unexposed plate as a CR reader without shuttering shows it (flat, at the image
        maximum), ``black`` = electronic shuttering (flat, at the image minimum).
    collimator_mm : float or (top, bottom, left, right)
        Band width (mm) on each side; 0 leaves that side open. ``truth.extras["field_px"]``
        is the exposed field ``(r0, r1, c0, c1)`` (half-open) in the final image.
    display : str, optional
        Display curve applied last, windowed on the anatomy (air .. densest bone; metal and
        white borders saturate): ``linear`` (linear in exposure), ``log`` (linear in
        attenuation), ``gamma`` (``gamma:G``, default 0.5), ``sigmoid`` (film-like S-curve),
        ``equalized`` (histogram equalisation) as 12-bit integers 0..4095, or ``edge8``
        (edge-enhanced: unsharp mask 2 mm, amount 1; quantised to 8-bit integers 0..255).
        All are monotonic in attenuation except ``edge8``. Default: the log image itself.
    """
    if laterality not in ("L", "R") or fingers not in _FINGERS_THETA_DEG:
        raise ValueError("laterality must be L or R and fingers up, down, left or right")
    if isinstance(rings, str):
        rings = (rings,)
    rng = np.random.default_rng(seed)
    metacarpals, phalanges, forearm, carpals, size = _hand_bones(
        rng, cortical_scale=cortical_scale, skeleton=skeleton, view=view, wall_asymmetry=wall_asymmetry,
        finger_spread_deg=finger_spread_deg, thumb_angle_deg=thumb_angle_deg,
    )
    if shape_px is None:
        shape_px = (int(round(field_mm[0] / spacing_mm)), int(round(field_mm[1] / spacing_mm)))
    shift = np.array(shift_mm, float)
    rot = rotation_deg
    if repeat is not None:
        prng = np.random.default_rng([seed, 7919, repeat])
        shift = shift + prng.uniform(-4.0, 4.0, 2)
        rot = rot + prng.uniform(-3.0, 3.0)
        noise_rng = np.random.default_rng([seed, 104729, repeat])
    else:
        noise_rng = np.random.default_rng([seed, 104729])
    # An oblique or lateral hand reaches further along its axis than the PA hand the default field
    # was sized for: centred a little more distally, its fingertips stay inside the field.
    anchor = HAND_ANCHOR_MM if view == "PA" else (HAND_ANCHOR_MM[0], HAND_ANCHOR_MM[1] + NON_PA_ANCHOR_SHIFT_MM)
    frame = _Frame(shape_px, spacing_mm, rot, laterality, fingers, tuple(shift), anchor)
    rows, cols = shape_px
    hands = [(frame, metacarpals, phalanges, forearm, carpals, size)]
    if second_hand_mm is not None:
        other = "R" if laterality == "L" else "L"
        frame2 = _Frame(shape_px, spacing_mm, rot, other, fingers, (shift[0] + second_hand_mm, shift[1]))
        bones2 = _hand_bones(np.random.default_rng([seed, 271828]), cortical_scale=cortical_scale,
                             skeleton=skeleton, view=view, wall_asymmetry=wall_asymmetry,
                             finger_spread_deg=finger_spread_deg, thumb_angle_deg=thumb_angle_deg)
        hands.append((frame2, *bones2))
    extras: dict[str, Any] = {}

    # Soft tissue on a 4x coarser grid (it is smooth), then interpolated.
    f = 4
    rc, cc = np.mgrid[0:rows:f, 0:cols:f].astype(float)
    t_coarse = None
    for fr, mcs, phs, fa, _, sz in hands:
        u, v = fr.to_uv(cc + (f - 1) / 2, rc + (f - 1) / 2)
        t = _soft_tissue_thickness(mcs, phs, fa, sz, view, u, v)
        t_coarse = t if t_coarse is None else t_coarse + t
    att = ndimage.zoom(t_coarse, f, order=1, grid_mode=True, mode="nearest")[:rows, :cols] * MU_SOFT_TISSUE
    if att.shape != (rows, cols):
        att = np.pad(att, ((0, rows - att.shape[0]), (0, cols - att.shape[1])), mode="edge")
    if soft_tissue_scale != 1.0:
        att *= soft_tissue_scale
    del rc, cc, u, v, t, t_coarse

    for fr, mcs, phs, fa, cps, _ in hands:
        _render_hand(att, fr, mcs, phs, fa, cps)
    anatomy_max = float(att.max())  # the densest anatomy: where the reader's window ends

    if metal_over is not None:
        mc = metacarpals[metal_over]
        direction = (mc.head - mc.base) / mc.length_mm
        normal = np.array([-direction[1], direction[0]])
        mid = (mc.base + mc.head) / 2

        def plate(uu, vv):
            along = (uu - mid[0]) * direction[0] + (vv - mid[1]) * direction[1]
            across = (uu - mid[0]) * normal[0] + (vv - mid[1]) * normal[1]
            inside = (np.abs(along) < 6.0) & (np.abs(across) < 2.0 + mc.width_mm / 2)  # 12 mm plate, 1 mm thick
            return MU_METAL * 1.0 * inside

        _add_local(att, frame, mid, 12.0, plate)

    rings_px = {}
    for name in rings:
        p = next(b for b in phalanges if b.name == f"{name}-p0")  # the proximal phalanx
        direction = (p.head - p.base) / p.length_mm
        centre = p.base + 0.5 * p.length_mm * direction
        r_in = (7.0 if name != "V" else 6.5) * size  # the finger's soft-tissue radius
        _add_local(att, frame, centre, r_in + 4.0, lambda uu, vv, c=centre, d=direction, ri=r_in:
                   _shell_attenuation(uu, vv, c, d, ri, ri + 1.5, 2.0, MU_METAL))
        rings_px[name] = tuple(float(x) for x in frame.to_px(centre))
    if rings_px:
        extras["rings_px"] = rings_px

    if wrist_metal is not None:
        if wrist_metal not in ("bracelet", "watch"):
            raise ValueError("wrist_metal must be bracelet or watch")
        centre = (forearm[0].head + forearm[1].head) / 2 - np.array([0.0, 20.0 * size])
        axis = np.array([0.0, 1.0])
        r_in = 35.0 * size
        if wrist_metal == "bracelet":
            _add_local(att, frame, centre, r_in + 6.0, lambda uu, vv: _shell_attenuation(
                uu, vv, centre, axis, r_in, r_in + 1.0, 3.0, 0.6 * MU_METAL))
        else:
            _add_local(att, frame, centre, r_in + 12.0, lambda uu, vv: _shell_attenuation(
                uu, vv, centre, axis, r_in, r_in + 0.8, 9.0, 0.5 * MU_METAL)
                + 6.0 * 0.6 * MU_METAL * ((uu - centre[0]) ** 2 + (vv - centre[1]) ** 2 < 17.0**2))
        extras["wrist_metal_px"] = tuple(float(x) for x in frame.to_px(centre))

    markers = []
    corner_order = [int(k) for k in np.random.default_rng([seed, 6151]).permutation(4)]
    if side_marker is not None:
        mask = _glyph_mask(_GLYPHS[side_marker], (12.0 / 7.0) / spacing_mm)
        r0, c0 = _free_corner(att, mask.shape, int(round(8.0 / spacing_mm)), corner_order, markers)
        att[r0:r0 + mask.shape[0], c0:c0 + mask.shape[1]] += 2.0 * MU_METAL * mask
        markers.append((r0, r0 + mask.shape[0], c0, c0 + mask.shape[1]))
    label_mask = None
    if text_label:
        label_mask = _glyph_mask(_text_bitmap(np.random.default_rng([seed, 8317])), (3.0 / 7.0) / spacing_mm)
        r0, c0 = _free_corner(att, label_mask.shape, int(round(6.0 / spacing_mm)), corner_order, markers)
        markers.append((r0, r0 + label_mask.shape[0], c0, c0 + label_mask.shape[1]))

    if blur_domain == "attenuation" and blur_sigma_mm > 0:
        att = ndimage.gaussian_filter(att, blur_sigma_mm / spacing_mm, mode="nearest", truncate=5.0)
    exposure = np.exp(-att)
    del att
    if blur_domain == "exposure" and blur_sigma_mm > 0:
        exposure = ndimage.gaussian_filter(exposure, blur_sigma_mm / spacing_mm, mode="nearest", truncate=5.0)
    if noise > 0:
        exposure = exposure + noise * np.sqrt(exposure) * noise_rng.standard_normal(exposure.shape)
    image = -np.log(np.clip(exposure, 1e-4, None))
    del exposure
    if unsharp is not None:
        # Vendor edge enhancement on the log image: image + amount * (image - blurred image).
        radius_mm, amount = unsharp
        image = image + amount * (image - ndimage.gaussian_filter(image, radius_mm / spacing_mm, mode="nearest"))

    # Collimator bands outside the exposed field: the image grows by them.
    top = bottom = left = right = 0
    if collimator is not None:
        if collimator not in ("white", "black"):
            raise ValueError("collimator must be white or black")
        widths = (collimator_mm,) * 4 if np.isscalar(collimator_mm) else tuple(collimator_mm)
        top, bottom, left, right = (int(round(w / spacing_mm)) for w in widths)
        level = float(image.max()) if collimator == "white" else float(image.min())
        image = np.pad(image, ((top, bottom), (left, right)), mode="constant", constant_values=level)
    field = (top, top + rows, left, left + cols)
    if collimator is not None:
        extras["collimator"] = collimator
        extras["field_px"] = field
    if markers:
        extras["markers_px"] = [(r0 + top, r1 + top, c0 + left, c1 + left) for r0, r1, c0, c1 in markers]

    if display is not None:
        in_field = np.zeros(image.shape, bool)
        in_field[field[0]:field[1], field[2]:field[3]] = True
        hi = anatomy_max + 0.05
        image = _apply_display(image, display, 0.0, hi, spacing_mm, in_field)
        extras["display"] = display
    if label_mask is not None:  # burned in after the display curve, at its maximum grey value
        white = 255.0 if display == "edge8" else 4095.0 if display is not None else float(image.max())
        r0, r1, c0, c1 = extras["markers_px"][-1]
        image[r0:r1, c0:c1][label_mask] = white

    def bone_truths(fr, mcs):
        out = {}
        for name, mc in mcs.items():
            b, h = fr.to_px(mc.base), fr.to_px(mc.head)
            out[name] = BoneTruth(
                name=name,
                cortical_thickness_mm=mc.thickness_mm,
                outer_width_mm=mc.width_mm,
                length_mm=mc.length_mm,
                base_px=(float(b[0]) + left, float(b[1]) + top),
                head_px=(float(h[0]) + left, float(h[1]) + top),
            )
        return out

    bones = bone_truths(frame, metacarpals)
    if len(hands) > 1:
        extras["second_hand_bones"] = bone_truths(hands[1][0], hands[1][1])
    if top or left:
        for key in ("rings_px", "wrist_metal_px"):
            if key in extras:
                pts = extras[key]
                shift_pt = lambda p: (p[0] + left, p[1] + top)  # noqa: E731
                extras[key] = {k: shift_pt(p) for k, p in pts.items()} if isinstance(pts, dict) else shift_pt(pts)
    truth = PhantomTruth(
        bones=bones, spacing_mm=spacing_mm, blur_sigma_mm=blur_sigma_mm, noise=noise, rotation_deg=rot,
        laterality=laterality, fingers=fingers, view=view, skeleton=skeleton, shape=image.shape,
        metal_over=metal_over, extras=extras,
    )
    return image, truth


def make_non_hand(seed: int = 0, *, spacing_mm: float = 0.15, shape_px: tuple[int, int] | None = None,
                  blur_sigma_mm: float = 0.15, noise: float = 0.01) -> np.ndarray:
    """A knee-like radiograph (two thick long bones meeting at a joint): no hand in it."""
    rng = np.random.default_rng(seed)
    if shape_px is None:
        shape_px = (int(240 / spacing_mm), int(180 / spacing_mm))
    rows, cols = shape_px
    frame = _Frame(shape_px, spacing_mm, rng.uniform(-10, 10), "L", "up")
    rr, cc = np.mgrid[0:rows, 0:cols].astype(float)
    u, v = frame.to_uv(cc, rr)
    thickness = np.minimum(2.0 * np.sqrt(np.clip(70.0**2 - u**2, 0, None)), 110.0)
    att = MU_SOFT_TISSUE * thickness
    for bone in (_LongBone("femur", np.array([0.0, 200.0]), np.array([0.0, 75.0]), 30.0, 5.0, 1.0, 2.6),
                 _LongBone("tibia", np.array([0.0, -60.0]), np.array([0.0, 68.0]), 28.0, 5.0, 1.0, 2.5)):
        _add_tube(att, frame, bone, supersample=1)
    exposure = ndimage.gaussian_filter(np.exp(-att), blur_sigma_mm / spacing_mm)
    exposure = exposure + noise * np.sqrt(exposure) * rng.standard_normal(exposure.shape)
    return -np.log(np.clip(exposure, 1e-4, None))


# ----------------------------------------------------------------------------- DICOM
_SOP_CLASS = {"CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1"}


def make_dataset(
    image: np.ndarray | None = None,
    truth: PhantomTruth | None = None,
    *,
    modality: str = "CR",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    spacing_attribute: str | None = "PixelSpacing",
    magnification: float = 1.1,
    spacing_mm: float | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    patient_name: str = "Phantom^Hand",
    patient_id: str = "PHANTOM-0001",
    charset: str | None = None,
    sex: str | None = "F",
    age: str | None = "062Y",
    birth_date: str | None = None,
    study_date: str = "20260101",
    laterality: str | None = "default",
    body_part: str = "HAND",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    accession: str = "ACC0001",
    **hand_kwargs: Any,
):
    """A valid CR or DX pydicom Dataset holding ``image`` (or ``make_hand(**hand_kwargs)``).

    Parameters
    ----------
    image, truth : from :func:`make_hand`; generated from ``hand_kwargs`` when ``image`` is None.
    photometric : {"MONOCHROME1", "MONOCHROME2"}
        MONOCHROME1 stores bone dark (inverted values).
    bits_stored : int
        10..16; the image is scaled linearly onto ``0 .. 2**bits_stored - 1``.
    spacing_attribute : {"PixelSpacing", "ImagerPixelSpacing", "magnified", "both", None}
        Which spacing to write. ``magnified`` writes ImagerPixelSpacing = spacing * magnification
        with EstimatedRadiographicMagnificationFactor, so the calibrated size is ``spacing``.
        ``None`` writes no spacing at all.
    spacing_mm : float, optional
        Spacing to write; default ``truth.spacing_mm``.
    rescale : (slope, intercept), optional
        Writes a Modality LUT (RescaleSlope/Intercept).
    window : (center, width), optional
        Writes a VOI LUT window.
    laterality : str or None
        ImageLaterality; ``"default"`` uses the phantom's laterality, None omits it.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if image is None:
        image, truth = make_hand(**hand_kwargs)
    if spacing_mm is None:
        spacing_mm = truth.spacing_mm if truth is not None else 0.1
    if not 8 <= bits_stored <= 16:
        raise ValueError("bits_stored must be 8..16")
    maxv = 2**bits_stored - 1
    lo, hi = 0.0, float(image.max()) * 1.02 + 1e-9
    stored = np.clip(np.round((image - lo) / (hi - lo) * maxv), 0, maxv).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = (maxv - stored).astype(np.uint16)
    elif photometric != "MONOCHROME2":
        raise ValueError("photometric must be MONOCHROME1 or MONOCHROME2")

    sop_class = _SOP_CLASS[modality]
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.Manufacturer = "DXR Node test phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth_date or ""
    ds.PatientSex = sex or ""
    if age:
        ds.PatientAge = age
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "PA"
    lat = (truth.laterality if truth is not None else None) if laterality == "default" else laterality
    if lat:
        ds.ImageLaterality = lat
    elif modality == "DX":
        ds.ImageLaterality = "U"
    else:
        ds.Laterality = ""  # Type 2C for a paired body part without ImageLaterality: present, empty
    ds.PatientOrientation = ["R", "H"] if modality == "DX" else ""
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.BurnedInAnnotation = "NO"
        ds.DetectorType = "SCINTILLATOR"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME2" else -1
        ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
        ds.LossyImageCompression = "00"
        ds.PositionerType = ""
        region = pydicom.Dataset()
        region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "85562004", "SCT", "Hand"
        ds.AnatomicRegionSequence = [region]
        ds.AcquisitionContextSequence = []
        view = pydicom.Dataset()
        view.CodeValue, view.CodingSchemeDesignator, view.CodeMeaning = "R-10214", "SRT", "postero-anterior"
        ds.ViewCodeSequence = [view]
        if window is None:
            window = (2 ** (bits_stored - 1), 2**bits_stored)  # DX for presentation needs a VOI
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = (rescale if rescale else (1, 0))
    ds.RescaleType = "US"
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if spacing_attribute in ("PixelSpacing", "both"):
        ds.PixelSpacing = [f"{spacing_mm:.6g}", f"{spacing_mm:.6g}"]
    if spacing_attribute in ("ImagerPixelSpacing", "both"):
        ds.ImagerPixelSpacing = [f"{spacing_mm:.6g}", f"{spacing_mm:.6g}"]
    if spacing_attribute == "magnified":
        ds.ImagerPixelSpacing = [f"{spacing_mm * magnification:.8g}"] * 2
        ds.EstimatedRadiographicMagnificationFactor = f"{magnification:.6g}"
    if spacing_attribute not in (None, "PixelSpacing", "ImagerPixelSpacing", "magnified", "both"):
        raise ValueError(f"unknown spacing_attribute {spacing_attribute!r}")
    ds.PixelData = stored.tobytes()
    return ds


def truth_location(truth: PhantomTruth):
    """An ``analysis.locate.HandLocation`` built from the phantom's known axes (test-only path).

    Lets tests check measurement and orchestration independently of the hand finder.
    """
    from analysis.locate import HandLocation, MetacarpalAxis

    axes = {}
    for name, b in truth.bones.items():
        ax = truth.axis(name)
        axes[name] = MetacarpalAxis(name=name, base_rc=ax.base_rc, head_rc=ax.head_rc, length_mm=ax.length_mm,
                                    width_mm=b.outer_width_mm)
    return HandLocation(view="PA", metacarpals=axes)
