"""Tiles: how a model trained on small squares inspects a high-resolution part.

A 20-px scratch on a 1024-px part is under 2 px once the part is resized to 64 x 64, so
the model never sees it. Instead the model's input is a ``tile`` x ``tile`` square cut from
the part at its working resolution: training draws random tiles (an epoch costs the same
whatever the resolution), scoring covers the part with a grid of tiles, the per-tile maps
are stitched back into one full-size map, and the image score is reduced from that map.

The geometry is a contract shared with the edge runtime's numpy twin
(deploy/granvae_edge/tiling.py); docs/contracts.md states it:

- origins along one axis: 0, stride, 2 stride, ... while a tile fits, plus ``size - tile``
  when the stride does not land there, so a non-dividing stride still covers the border;
- tiles row-major (y outer, x inner);
- stitching is the mean over the tiles covering a pixel: a constant map stitches to the
  same constant, so tile borders leave no seams.

The geometry and the `tiling` config (Tiling, TilingConfig, extract_tiles, grid_tiles) are
numpy-only and live in granvae/tile_geometry.py, so reading params.yaml needs no torch;
they are re-exported here beside the torch halves (stitch, random_tiles).
"""

from __future__ import annotations

import torch

from granvae.tile_geometry import Tiling, TilingConfig, extract_tiles, grid_tiles

__all__ = ["Tiling", "TilingConfig", "extract_tiles", "grid_tiles", "random_tiles", "stitch"]


def stitch(tile_maps: torch.Tensor, tiling: Tiling, height: int, width: int) -> torch.Tensor:
    """(N, T, tile, tile) per-tile maps -> (N, H, W), the mean over overlapping tiles."""
    grid = tiling.grid(height, width)
    if tile_maps.shape[1] != len(grid):
        raise ValueError(f"{tile_maps.shape[1]} tile maps for a grid of {len(grid)} tiles")
    t = tiling.tile
    canvas = tile_maps.new_zeros((tile_maps.shape[0], height, width))
    for k, (y, x) in enumerate(grid):
        canvas[:, y : y + t, x : x + t] += tile_maps[:, k]
    count = torch.from_numpy(tiling.coverage(height, width)).to(canvas)
    return canvas / count


def random_tiles(
    images: torch.Tensor, tile: int, per_image: int, gen: torch.Generator
) -> torch.Tensor:
    """``per_image`` tiles at uniform random origins from each (N, C, H, W) image, so an
    epoch costs N * per_image tiles whatever the resolution."""
    n, _, h, w = images.shape
    if tile > h or tile > w:
        raise ValueError(f"tile {tile} px is larger than the {h}x{w} training images")
    ys = torch.randint(0, h - tile + 1, (n * per_image,), generator=gen).tolist()
    xs = torch.randint(0, w - tile + 1, (n * per_image,), generator=gen).tolist()
    rows = [i // per_image for i in range(n * per_image)]
    return torch.stack(
        [images[i, :, y : y + tile, x : x + tile] for i, y, x in zip(rows, ys, xs, strict=True)]
    )
