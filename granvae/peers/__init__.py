"""What an engineer would try before a VAE: the peers every detection claim is measured against.

Each peer fits on good training images and scores uint8 (N, C, H, W) images with an
image score and a pixel anomaly map, through the same :class:`Peer` interface, so the
benchmark gives every method the same splits, the same threshold rule and the same metrics.
"""

from granvae.peers.base import Peer, PeerScores
from granvae.peers.patch_nn import PatchNearestNeighbour
from granvae.peers.pca import PCAResidual
from granvae.peers.pixel_gaussian import PixelGaussian

PEERS: dict[str, type[Peer]] = {
    "pixel_gaussian": PixelGaussian,
    "pca_residual": PCAResidual,
    "patch_nn": PatchNearestNeighbour,
}

__all__ = ["PEERS", "PatchNearestNeighbour", "PCAResidual", "Peer", "PeerScores", "PixelGaussian"]
