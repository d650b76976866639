"""Fit a tiled head's tile-density statistics (granvae.scoring.density) on good tiles.

Good tiles are drawn from the scoring grid of *training* images (as the other statistics:
the validation images calibrate the threshold and must stay unseen). They are split in two
halves: one builds the coreset of codes, the other measures each part's spread, so the
k-NN part is standardised on distances from tiles that are not in the bank.
"""

from __future__ import annotations

import numpy as np
import torch

from granvae.scoring import density
from granvae.scoring.head import InspectionHead, _Pass, batches_nhwc
from granvae.scoring.tiling import Tiling


def sample_grid_tiles(
    images: np.ndarray, tiling: Tiling, n: int, rng: np.random.Generator
) -> np.ndarray:
    """(n, C, tile, tile): ``n`` tiles at grid origins of images drawn at random (with
    replacement across images, so many images contribute and not only the first few)."""
    _, _, h, w = images.shape
    grid = tiling.grid(h, w)
    which = rng.integers(len(images), size=n)
    where = rng.integers(len(grid), size=n)
    t = tiling.tile
    return np.stack(
        [images[i, :, y : y + t, x : x + t] for i, (y, x) in zip(which, (grid[k] for k in where),
                                                                  strict=True)]
    )  # fmt: skip


@torch.no_grad()
def _codes_and_maxima(head: InspectionHead, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, maxima = [], []
    for batch in batches_nhwc(tiles, 512, "cpu"):
        p = _Pass(head, batch)
        codes.append(p.mu.numpy())
        if head.density_fitted:
            maxima.append(density.tile_maxima(p))
    return np.concatenate(codes), (np.concatenate(maxima) if maxima else np.empty(0))


def fit_density(
    head: InspectionHead,
    train_images: np.ndarray,
    tiling: Tiling,
    rng: np.random.Generator | None = None,
    n_tiles: int = density.FIT_TILES,
    coreset_size: int = density.CORESET_SIZE,
) -> density.DensityStats:
    """Fill ``head``'s coreset and part moments from uint8 NCHW good images; returns them.

    The images (not the tiles) are split in two, so no tile that measures the spread is a
    copy of, or overlaps, a tile in the bank."""
    if len(train_images) < 2:
        raise ValueError("need >= 2 good training images to fit the tile density statistics")
    rng = rng or np.random.default_rng(0)
    head = head.cpu().eval()
    order = rng.permutation(len(train_images))
    half = len(order) // 2
    bank_tiles = sample_grid_tiles(train_images[np.sort(order[:half])], tiling, n_tiles // 2, rng)
    held_tiles = sample_grid_tiles(train_images[np.sort(order[half:])], tiling, n_tiles // 2, rng)
    codes, _ = _codes_and_maxima(head, bank_tiles)
    coreset = codes[density.greedy_coreset(codes, coreset_size, rng)]
    k = len(density.PARTS)
    density.set_stats(head, density.DensityStats(coreset, np.zeros(k, np.float32),
                                                 np.ones(k, np.float32)))  # fmt: skip
    _, maxima = _codes_and_maxima(head, held_tiles)
    mean = maxima.mean(0).astype(np.float32)
    # floor: a part that never varies on good tiles must not turn float noise into alarms
    std = np.maximum(maxima.std(0), 1e-3 * np.abs(mean) + 1e-6).astype(np.float32)
    stats = density.DensityStats(coreset.astype(np.float32), mean, std)
    density.set_stats(head, stats)
    return stats
