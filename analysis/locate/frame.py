"""The canonical hand frame: fingers up, thumb to the right, in the hand's own scale.

Takes the working copy (:mod:`analysis.locate.body`), fingers II-V with the hand axis ``u``, the
thumb side ``v`` and the finger spacing ``s`` (working pixels, :mod:`analysis.locate.fingers`);
gives a :class:`_CanonicalHand`: the working copy resampled so that the fingers point to row 0
and the thumb to +col, the finger bases and directions in that frame, and the bone and ridge
filters the shaft fit and the joint search read. Canonical pixels are working pixels (about
0.5 mm); lengths are stated in ``s`` (the finger spacing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from analysis.image_kernels import bilinear
from analysis.locate.ridges import RIDGE_SIGMA, _ridge_x, _tophat

if TYPE_CHECKING:
    from analysis.locate.body import _Work
    from analysis.locate.fingers import _Finger


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
        """Canonical ``(y, x)`` to working ``(row, col)``."""
        cy, cx = self.shape[0] / 2.0, self.shape[1] / 2.0
        r = self.centre[0] - (y - cy) * self.u[0] + (x - cx) * self.v[0]
        c = self.centre[1] - (y - cy) * self.u[1] + (x - cx) * self.v[1]
        return r, c

    def from_work(self, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Working ``(row, col)`` to canonical ``(y, x)``."""
        cy, cx = self.shape[0] / 2.0, self.shape[1] / 2.0
        dr, dc = r - self.centre[0], c - self.centre[1]
        y = cy - (dr * self.u[0] + dc * self.u[1])
        x = cx + (dr * self.v[0] + dc * self.v[1])
        return y, x

    def sample(self, image: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
        """``image`` (working pixels) resampled on the frame's grid (``shape``), ``cval`` outside."""
        yy, xx = np.mgrid[0 : self.shape[0], 0 : self.shape[1]].astype(float)
        r, c = self.to_work(yy, xx)
        if order == 1:
            return bilinear(image, r, c, mode="constant", cval=cval)
        return ndi.map_coordinates(np.asarray(image, dtype=float), [r, c], order=order, mode="constant", cval=cval)


def _to_image_rc(frame: _HandFrame, factor: int, y: float, x: float) -> tuple[float, float]:
    """Canonical ``(y, x)`` of ``frame`` as ``(row, col)`` pixels of the full-resolution image
    (working blocks of ``factor`` image pixels)."""
    r, c = frame.to_work(np.asarray(y, float), np.asarray(x, float))
    # Working pixel k covers image pixels [k*f, (k+1)*f): its centre is k*f + (f-1)/2.
    return (float(r) * factor + 0.5 * (factor - 1), float(c) * factor + 0.5 * (factor - 1))


def _along(image: np.ndarray, a: float, b: float, ys: np.ndarray, half_px: float = 1.0) -> np.ndarray:
    """Mean of ``image`` across a narrow band centred on the line x = a + b*y, per y."""
    offs = np.linspace(-half_px, half_px, 3)
    xs = a + b * ys
    vals = bilinear(image, ys[None, :], xs[None, :] + offs[:, None], mode="nearest")
    return np.mean(vals, axis=0)


@dataclass
class _CanonicalHand:
    """The hand in its canonical frame (fingers to row 0, thumb to +col), for II-V."""

    frame: _HandFrame
    factor: int
    """Working block size (image pixels per working pixel)."""
    s: float
    """Finger spacing (working = canonical pixels)."""
    canon: np.ndarray
    """The flattened working copy resampled in the frame."""
    fb: np.ndarray
    """Finger bases II-V, ``(4, 2)`` canonical ``(y, x)``."""
    fd: np.ndarray
    """Finger directions II-V, ``(4, 2)`` unit ``(dy, dx)``."""
    bone: np.ndarray
    """Top-hat of ``canon`` at 0.7 s: bone above the soft-tissue floor."""
    ridge: np.ndarray
    """Ridge strength of ``bone`` across the shafts (:func:`analysis.locate.ridges._ridge_x`)."""

    def to_image_rc(self, y: float, x: float) -> tuple[float, float]:
        """Canonical ``(y, x)`` as ``(row, col)`` pixels of the full-resolution image."""
        return _to_image_rc(self.frame, self.factor, y, x)


def _canonical_hand(w: _Work, four: list[_Finger], u: np.ndarray, v: np.ndarray, s: float) -> _CanonicalHand:
    """The canonical frame around fingers II-V: ``8.5 s`` high and ``7 s`` wide, its centre
    ``2.2 s`` proximal to the mean finger base. ``u``, ``v``: unit wrist-to-fingers and thumb-side
    vectors ``(d_row, d_col)``; ``s``: finger spacing (working pixels)."""
    bases = np.array([f.base_rc for f in four])
    frame = _HandFrame(bases.mean(axis=0) - 2.2 * s * u, u, v, (int(8.5 * s), int(7 * s)))
    canon = frame.sample(w.g)
    fb = np.array(frame.from_work(bases[:, 0], bases[:, 1])).T
    tips = np.array([f.tip_rc for f in four])
    ft = np.array(frame.from_work(tips[:, 0], tips[:, 1])).T
    fd = ft - fb
    fd /= np.hypot(fd[:, 0], fd[:, 1])[:, None] + 1e-12
    bone = _tophat(canon, int(round(0.7 * s)))
    ridge = _ridge_x(bone, 0.25 * s, RIDGE_SIGMA * s)
    return _CanonicalHand(frame, w.factor, s, canon, fb, fd, bone, ridge)
