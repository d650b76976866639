"""Pixel anomaly maps and the ways to reduce them to one score, in ONNX-exportable torch.

Why these and not the summed NLL: a defect is small and local, the good variation of a
part is large and global. A sum over 4096 pixels lets a brightness shift outvote a
20-pixel scratch; a *localized* statistic (the maximum, or the mean of the top k pixels,
of a map smoothed over a few pixels) does not. Smoothing first matters: the raw maximum of
a residual is one noisy pixel, a smoothed maximum is a small region that is wrong together.

Every function works on (N, H, W) or (N, C, H, W) float tensors and uses only Conv, Pad,
TopK and elementwise ops, so the exported graph computes the same numbers as training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Bergmann et al. 2019 (SSIM autoencoder) and Wang et al. 2004: 11x11 Gaussian window,
# sigma 1.5, constants for a data range of 1.
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def gaussian_kernel(sigma: float, radius: int | None = None) -> torch.Tensor:
    """(1, 1, k, k) normalised Gaussian, k = 2 * radius + 1, radius = ceil(3 sigma)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = int(math.ceil(3.0 * sigma)) if radius is None else int(radius)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-channel Gaussian blur of (N, C, H, W) with reflect padding (no dark border).

    Channels are folded into the batch so the conv weight stays one constant (1, 1, k, k):
    the TorchScript ONNX exporter cannot export a conv whose weight shape it cannot see.
    """
    _, c, h, w = x.shape
    r = kernel.shape[-1] // 2
    padded = F.pad(x.reshape(-1, 1, h, w), (r, r, r, r), mode="reflect")
    return F.conv2d(padded, kernel).reshape(-1, c, h, w)


def smooth_map(amap: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(N, H, W) map smoothed by ``kernel``."""
    return blur(amap[:, None], kernel)[:, 0]


def ssim_map(x: torch.Tensor, y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Local SSIM of two (N, C, H, W) images in [0, 1], averaged over channels -> (N, H, W).

    Population (not sample) statistics under the Gaussian window, as in Wang et al. 2004
    and scikit-image's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``; 1 - SSIM is the anomaly map: it reacts to lost
    structure and contrast, which a squared error on busy texture mostly misses.
    """
    mx, my = blur(x, kernel), blur(y, kernel)
    vx = blur(x * x, kernel) - mx * mx
    vy = blur(y * y, kernel) - my * my
    cxy = blur(x * y, kernel) - mx * my
    num = (2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)
    den = (mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2)
    return (num / den).mean(1)


def topk_mean(amap: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the k largest values of each (N, H, W) map: a region, not a pixel."""
    return torch.topk(amap.flatten(1), k, dim=1).values.mean(1)


def max_value(amap: torch.Tensor) -> torch.Tensor:
    return amap.flatten(1).max(1).values


def sum_value(amap: torch.Tensor) -> torch.Tensor:
    return amap.flatten(1).sum(1)


def mahalanobis_sq(v: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """(v - mean)^T P (v - mean) per row: how unusual a latent code is among good images."""
    d = v - mean
    return ((d @ precision) * d).sum(1)
