"""A Gaussian per pixel: the simplest model of an aligned good part."""

from __future__ import annotations

import numpy as np

from granvae.peers.base import PeerScores, localized, unit


class PixelGaussian:
    """map = sum over channels of ((x - mean) / std)^2, mean and std per pixel of good images."""

    name = "pixel_gaussian"

    def fit(self, images: np.ndarray) -> None:
        x = unit(images)
        self.mean = x.mean(0)
        std = x.std(0)
        self.std = np.maximum(std, 0.1 * float(np.median(std)) + 1e-6)

    def score(self, images: np.ndarray) -> PeerScores:
        z = (unit(images) - self.mean) / self.std
        return localized((z**2).sum(1))
