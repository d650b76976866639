"""PCA reconstruction residual: the linear autoencoder a VAE must beat to earn its cost."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from granvae.peers.base import PeerScores, localized, unit


class PCAResidual:
    """map = squared residual of the projection onto the top ``n_components`` of good images."""

    name = "pca_residual"

    def __init__(self, n_components: int = 16, seed: int = 0) -> None:
        self.pca = PCA(n_components=n_components, random_state=seed)

    def fit(self, images: np.ndarray) -> None:
        x = unit(images)
        self.shape = x.shape[1:]
        self.pca.fit(x.reshape(len(x), -1))

    def score(self, images: np.ndarray) -> PeerScores:
        x = unit(images).reshape(len(images), -1)
        recon = self.pca.inverse_transform(self.pca.transform(x))
        residual = ((x - recon) ** 2).reshape(len(images), *self.shape)
        return localized(residual.sum(1))
