"""Raw-patch nearest neighbour with a coreset memory bank: PatchCore's shape, raw pixels.

PatchCore (Roth et al. 2022) scores a patch by its distance to the nearest good patch in a
memory bank thinned by greedy k-centre selection. Its strength comes from pretrained CNN
features, which need downloaded weights; this peer keeps the method and uses raw pixels,
which is what a user without a model hub can run. Texture that repeats is its home ground.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from granvae.peers.base import PeerScores, localized, unit


def extract_patches(x: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, P, C*size*size) patches on a regular grid."""
    return F.unfold(x, size, stride=stride).transpose(1, 2)


def greedy_coreset(features: torch.Tensor, k: int, seed: int = 0, proj_dim: int = 16):
    """Indices of k points chosen by greedy k-centre (each new point the farthest from the
    chosen ones), on a random projection as in PatchCore, which keeps it cheap."""
    n = len(features)
    if k >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    if features.shape[1] > proj_dim:
        proj = torch.randn(features.shape[1], proj_dim, generator=gen) / proj_dim**0.5
        features = features @ proj
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny mat-vecs: thread hand-offs cost more than maths
    try:
        return _greedy(features, k, gen)
    finally:
        torch.set_num_threads(threads)


def _greedy(features: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    n = len(features)
    sq = features.pow(2).sum(1)
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    dist = sq - 2 * features @ features[chosen[0]] + sq[chosen[0]]
    for _ in range(k - 1):
        nxt = int(torch.argmax(dist))
        chosen.append(nxt)
        torch.minimum(dist, sq - 2 * features @ features[nxt] + sq[nxt], out=dist)
    return torch.tensor(chosen)


class PatchNearestNeighbour:
    name = "patch_nn"

    def __init__(
        self, size: int = 8, stride: int = 4, bank: int = 4096, pool: int = 65536, seed: int = 0
    ) -> None:
        self.size, self.stride, self.bank_size, self.seed = size, stride, bank, seed
        self.pool = pool

    def fit(self, images: np.ndarray) -> None:
        """Bank = greedy coreset of at most ``pool`` randomly drawn training patches (the
        full greedy pass over every patch costs minutes on a 2-core CPU for little gain)."""
        x = torch.from_numpy(unit(images))
        feats = extract_patches(x, self.size, self.stride).reshape(-1, self.size**2 * x.shape[1])
        gen = torch.Generator().manual_seed(self.seed)
        if len(feats) > self.pool:
            feats = feats[torch.randperm(len(feats), generator=gen)[: self.pool]]
        idx = greedy_coreset(feats, self.bank_size, self.seed)
        self.bank = feats[idx].contiguous()

    @torch.no_grad()
    def score(self, images: np.ndarray) -> PeerScores:
        x = torch.from_numpy(unit(images))
        n, _, h, w = x.shape
        grid = (h - self.size) // self.stride + 1, (w - self.size) // self.stride + 1
        out = []
        for start in range(0, n, 32):
            q = extract_patches(x[start : start + 32], self.size, self.stride)
            d = torch.cdist(q.reshape(-1, q.shape[-1]), self.bank).min(1).values
            d = d.reshape(len(q), 1, *grid)
            out.append(F.interpolate(d, size=(h, w), mode="bilinear", align_corners=False)[:, 0])
        return localized(torch.cat(out).numpy())
