"""Rigid registration of a part to a reference good frame: small rotation, then shift.

A part on a fixture moves between frames (a few pixels, a few degrees). Its outline is the
strongest structure in view, so any per-pixel statistic of good parts smears along the
outline unless each frame is first brought onto one reference frame. This module estimates
the rigid motion that takes a frame onto the reference and moves arrays between the two
frames; granvae.scoring.position builds the per-pixel statistics on top of it.

Method (the edge runtime repeats it in numpy, deploy/granvae_edge/registration.py):

1. rotation: a search over ``angles`` (degrees) on both images block-averaged to at most
   COARSE_SIDE px; each candidate rotation of the frame is phase-correlated with the
   reference, and the angle whose correlation peak is highest wins, refined by a parabola
   through its neighbours' peaks;
2. shift: the frame rotated by that angle is phase-correlated with the reference at full
   size (scikit-image's ``phase_cross_correlation``, sub-pixel to 1/UPSAMPLE px).

Conventions (shared with the edge twin): arrays are (H, W); a ``Rigid`` maps a frame's pixel
p = (y, x) to the reference's ``R(angle) (p - c) + c + (dy, dx)`` with c the image centre
((H - 1) / 2, (W - 1) / 2) and R the rotation by ``angle`` degrees in (y, x); sampling is
bilinear with coordinates clamped to the border (``nearest`` beyond the edge).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.registration import phase_cross_correlation

COARSE_SIDE = 128  # px: the rotation search runs on images block-averaged to at most this
UPSAMPLE = 20  # sub-pixel resolution of the shift, 1/UPSAMPLE px
DEFAULT_ANGLES = tuple(np.round(np.arange(-4.0, 4.01, 0.5), 2))  # degrees searched


@dataclass(frozen=True)
class Rigid:
    """Rotation (degrees, about the image centre) then shift (px) taking a frame onto the
    reference."""

    angle: float = 0.0
    dy: float = 0.0
    dx: float = 0.0

    def as_array(self) -> np.ndarray:
        return np.asarray([self.angle, self.dy, self.dx], np.float64)


def _rotation(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.asarray([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _coords(shape: tuple[int, int], matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(2, H, W) source coordinates ``matrix @ p + offset`` for every output pixel p."""
    grid = np.indices(shape, dtype=np.float64).reshape(2, -1)
    return (matrix @ grid + offset[:, None]).reshape(2, *shape)


def to_reference(array: np.ndarray, rigid: Rigid) -> np.ndarray:
    """A frame's (H, W) array resampled onto the reference grid: out[q] = array[T^-1 q]."""
    shape = array.shape
    c = (np.asarray(shape, np.float64) - 1.0) / 2.0
    r_inv = _rotation(rigid.angle).T
    d = np.asarray([rigid.dy, rigid.dx])
    coords = _coords(shape, r_inv, c - r_inv @ (c + d))
    return ndimage.map_coordinates(
        np.asarray(array, np.float32), coords, order=1, mode="nearest"
    ).astype(np.float32)


def to_frame(array: np.ndarray, rigid: Rigid) -> np.ndarray:
    """A reference-grid (H, W) array resampled onto the frame: out[p] = array[T p]."""
    shape = array.shape
    c = (np.asarray(shape, np.float64) - 1.0) / 2.0
    r = _rotation(rigid.angle)
    d = np.asarray([rigid.dy, rigid.dx])
    coords = _coords(shape, r, c + d - r @ c)
    return ndimage.map_coordinates(
        np.asarray(array, np.float32), coords, order=1, mode="nearest"
    ).astype(np.float32)


def block_mean(image: np.ndarray, side: int = COARSE_SIDE) -> np.ndarray:
    """(H, W) averaged over f x f blocks, f the smallest integer bringing both sides to
    <= ``side`` (trailing rows/columns that do not fill a block are dropped)."""
    h, w = image.shape
    f = max(1, -(-max(h, w) // side))
    hh, ww = h // f, w // f
    return image[: hh * f, : ww * f].reshape(hh, f, ww, f).mean(axis=(1, 3))


def peak_height(reference_fft: np.ndarray, moving: np.ndarray) -> float:
    """Height of the phase-correlation peak (1 = identical up to a circular shift) of
    ``moving`` against the reference given by its FFT."""
    cross = reference_fft * np.conj(np.fft.fft2(moving))
    cross /= np.maximum(np.abs(cross), 1e-12)
    return float(np.fft.ifft2(cross).real.max())


def best_angle(reference: np.ndarray, image: np.ndarray, angles: tuple[float, ...]) -> float:
    """The angle of ``angles`` (refined by a parabola through its neighbours) whose rotation
    of ``image`` phase-correlates best with ``reference``; both already coarse."""
    ref_fft = np.fft.fft2(reference)
    heights = [peak_height(ref_fft, to_reference(image, Rigid(a))) for a in angles]
    return refine_peak(np.asarray(angles, np.float64), np.asarray(heights, np.float64))


def refine_peak(xs: np.ndarray, ys: np.ndarray) -> float:
    """Vertex of the parabola through the largest of ``ys`` and its two neighbours (evenly
    spaced ``xs``); the arg-max itself at either end of the search."""
    i = int(np.argmax(ys))
    if i == 0 or i == len(ys) - 1:
        return float(xs[i])
    left, mid, right = ys[i - 1], ys[i], ys[i + 1]
    denom = left - 2.0 * mid + right
    step = xs[1] - xs[0]
    offset = 0.5 * (left - right) / denom if denom < 0 else 0.0
    return float(xs[i] + offset * step)


def estimate(
    reference: np.ndarray,
    image: np.ndarray,
    angles: tuple[float, ...] = DEFAULT_ANGLES,
) -> Rigid:
    """The ``Rigid`` taking (H, W) ``image`` onto (H, W) ``reference`` (same shape)."""
    if reference.shape != image.shape or reference.ndim != 2:
        raise ValueError(f"registration needs two (H, W) arrays of one shape, got "
                         f"{reference.shape} and {image.shape}")  # fmt: skip
    ref = np.asarray(reference, np.float64)
    img = np.asarray(image, np.float64)
    angle = 0.0
    if len(angles) > 1:
        angle = best_angle(block_mean(ref), block_mean(img), tuple(angles))
    rotated = to_reference(img, Rigid(angle)) if angle else img
    shift, _, _ = phase_cross_correlation(ref, rotated, upsample_factor=UPSAMPLE,
                                          normalization="phase")  # fmt: skip
    return Rigid(angle=angle, dy=float(shift[0]), dx=float(shift[1]))


def gray(image: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) image -> (H, W) float32, the mean over channels."""
    arr = np.asarray(image, np.float32)
    return arr.mean(axis=0) if arr.ndim == 3 else arr
