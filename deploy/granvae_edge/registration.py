"""Rigid registration to the bundle's reference frame, in numpy: the edge twin of
granvae/scoring/registration.py (same method, same conventions; no scipy, no scikit-image).

A ``Rigid`` (angle degrees, dy, dx) maps a frame's pixel p = (y, x) to the reference's
``R(angle) (p - c) + c + (dy, dx)``, c the image centre; arrays are sampled bilinearly with
coordinates clamped to the border. The rotation is found by a search over a few angles on
block-averaged images (phase-correlation peak height, parabola refinement), the shift by
phase correlation at full size refined to 1/UPSAMPLE px with a local DFT around the peak
(the correlation evaluated on a fine grid of sub-pixel shifts, two small matrix products).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COARSE_SIDE = 128
UPSAMPLE = 20
DEFAULT_ANGLES = tuple(np.round(np.arange(-4.0, 4.01, 0.5), 2))


@dataclass(frozen=True)
class Rigid:
    angle: float = 0.0
    dy: float = 0.0
    dx: float = 0.0


def _rotation(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.asarray([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def _sample(array: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """out[p] = array[matrix @ p + offset], bilinear, coordinates clamped to the border."""
    h, w = array.shape
    ys, xs = np.indices((h, w), dtype=np.float64)
    sy = np.clip(matrix[0, 0] * ys + matrix[0, 1] * xs + offset[0], 0.0, h - 1.0)
    sx = np.clip(matrix[1, 0] * ys + matrix[1, 1] * xs + offset[1], 0.0, w - 1.0)
    y0 = np.minimum(np.floor(sy).astype(np.intp), h - 2) if h > 1 else np.zeros_like(sy, np.intp)
    x0 = np.minimum(np.floor(sx).astype(np.intp), w - 2) if w > 1 else np.zeros_like(sx, np.intp)
    fy, fx = sy - y0, sx - x0
    a = np.asarray(array, np.float64)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    top = a[y0, x0] * (1.0 - fx) + a[y0, x1] * fx
    bottom = a[y1, x0] * (1.0 - fx) + a[y1, x1] * fx
    return (top * (1.0 - fy) + bottom * fy).astype(np.float32)


def to_reference(array: np.ndarray, rigid: Rigid) -> np.ndarray:
    """out[q] = array[T^-1 q]: a frame's array on the reference grid."""
    c = (np.asarray(array.shape, np.float64) - 1.0) / 2.0
    r_inv = _rotation(rigid.angle).T
    d = np.asarray([rigid.dy, rigid.dx])
    return _sample(array, r_inv, c - r_inv @ (c + d))


def to_frame(array: np.ndarray, rigid: Rigid) -> np.ndarray:
    """out[p] = array[T p]: a reference-grid array on the frame."""
    c = (np.asarray(array.shape, np.float64) - 1.0) / 2.0
    r = _rotation(rigid.angle)
    d = np.asarray([rigid.dy, rigid.dx])
    return _sample(array, r, c + d - r @ c)


def block_mean(image: np.ndarray, side: int = COARSE_SIDE) -> np.ndarray:
    h, w = image.shape
    f = max(1, -(-max(h, w) // side))
    hh, ww = h // f, w // f
    return image[: hh * f, : ww * f].reshape(hh, f, ww, f).mean(axis=(1, 3))


def _cross_power(reference_fft: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Phase-normalised cross-power spectrum: its inverse FFT peaks at the shift d with
    reference[q + d] = moving[q]."""
    cross = reference_fft * np.conj(np.fft.fft2(moving))
    return cross / np.maximum(np.abs(cross), 1e-12)


def peak_height(reference_fft: np.ndarray, moving: np.ndarray) -> float:
    return float(np.fft.ifft2(_cross_power(reference_fft, moving)).real.max())


def refine_peak(xs: np.ndarray, ys: np.ndarray) -> float:
    i = int(np.argmax(ys))
    if i == 0 or i == len(ys) - 1:
        return float(xs[i])
    left, mid, right = ys[i - 1], ys[i], ys[i + 1]
    denom = left - 2.0 * mid + right
    offset = 0.5 * (left - right) / denom if denom < 0 else 0.0
    return float(xs[i] + offset * (xs[1] - xs[0]))


def best_angle(reference: np.ndarray, image: np.ndarray, angles: tuple[float, ...]) -> float:
    ref_fft = np.fft.fft2(reference)
    heights = [peak_height(ref_fft, to_reference(image, Rigid(a))) for a in angles]
    return refine_peak(np.asarray(angles, np.float64), np.asarray(heights, np.float64))


def _signed(index: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """FFT indices past the middle are negative shifts."""
    size = np.asarray(shape)
    return np.where(index > size // 2, index - size, index).astype(np.float64)


def phase_shift(reference: np.ndarray, moving: np.ndarray, upsample: int = UPSAMPLE) -> np.ndarray:
    """(dy, dx) with reference[q + d] = moving[q], to 1/``upsample`` px: the integer peak of
    the phase correlation, then the correlation evaluated directly (inverse DFT at chosen
    points) on a grid of step 1/upsample within 0.75 px of it; its maximum wins."""
    cross = _cross_power(np.fft.fft2(reference), moving)
    corr = np.fft.ifft2(cross).real
    peak = np.unravel_index(int(np.argmax(corr)), corr.shape)
    d0 = _signed(np.asarray(peak), corr.shape)
    if upsample <= 1:
        return d0
    span = int(np.ceil(1.5 * upsample))
    steps = (np.arange(span) - span // 2) / upsample
    h, w = corr.shape
    ky = np.fft.fftfreq(h)[None, :]
    kx = np.fft.fftfreq(w)[:, None]
    # corr(y, x) = (1/HW) sum_k cross[k] exp(2 pi i (ky y + kx x)) at y = d0y + steps, etc.
    ey = np.exp(2j * np.pi * (d0[0] + steps)[:, None] * ky)  # (span, H)
    ex = np.exp(2j * np.pi * kx * (d0[1] + steps)[None, :])  # (W, span)
    local = (ey @ cross @ ex).real
    iy, ix = np.unravel_index(int(np.argmax(local)), local.shape)
    return np.asarray([d0[0] + steps[iy], d0[1] + steps[ix]])


def estimate(
    reference: np.ndarray, image: np.ndarray, angles: tuple[float, ...] = DEFAULT_ANGLES
) -> Rigid:
    """The ``Rigid`` taking (H, W) ``image`` onto (H, W) ``reference``."""
    if reference.shape != image.shape or reference.ndim != 2:
        raise ValueError(f"registration needs two (H, W) arrays of one shape, got "
                         f"{reference.shape} and {image.shape}")  # fmt: skip
    ref = np.asarray(reference, np.float64)
    img = np.asarray(image, np.float64)
    angle = 0.0
    if len(angles) > 1:
        angle = best_angle(block_mean(ref), block_mean(img), tuple(angles))
    rotated = to_reference(img, Rigid(angle)).astype(np.float64) if angle else img
    dy, dx = phase_shift(ref, rotated)
    return Rigid(angle=angle, dy=float(dy), dx=float(dx))


def gray(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) edge image -> (H, W) float32, the mean over channels."""
    arr = np.asarray(image, np.float32)
    return arr.mean(axis=2) if arr.ndim == 3 else arr
