"""The interface every peer detector meets, and the map-to-score step they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from granvae.scoring import maps

SMOOTH_SIGMA = 2.0  # the same localisation as granvae's *_max rules, so peers are not handicapped


@dataclass(frozen=True)
class PeerScores:
    scores: np.ndarray  # (N,)
    maps: np.ndarray  # (N, H, W)


class Peer(Protocol):
    name: str

    def fit(self, images: np.ndarray) -> None: ...

    def score(self, images: np.ndarray) -> PeerScores: ...


def unit(images: np.ndarray) -> np.ndarray:
    """uint8 NCHW -> float32 in [0, 1]."""
    return np.asarray(images, dtype=np.float32) / 255.0


def localized(raw_maps: np.ndarray, sigma: float = SMOOTH_SIGMA) -> PeerScores:
    """Smooth (N, H, W) maps and score each image by its maximum."""
    kernel = maps.gaussian_kernel(sigma)
    with torch.no_grad():
        smoothed = maps.smooth_map(torch.from_numpy(np.ascontiguousarray(raw_maps, np.float32)),
                                   kernel)  # fmt: skip
    out = smoothed.numpy()
    return PeerScores(out.reshape(len(out), -1).max(1), out)
