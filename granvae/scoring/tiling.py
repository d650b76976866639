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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator


class TilingConfig(BaseModel):
    """params.yaml ``tiling``: null ``tile`` = the whole image is the model's input."""

    tile: int | None = Field(None, ge=16)  # px; the model's input side
    stride: int | None = Field(None, ge=1)  # px between scoring tiles; null = tile (no overlap)
    tiles_per_image: int = Field(4, ge=1)  # random training tiles per image per epoch

    @model_validator(mode="after")
    def _stride_needs_tile(self) -> TilingConfig:
        if self.stride is not None and self.tile is None:
            raise ValueError("tiling.stride is set but tiling.tile is null")
        self.geometry()  # stride <= tile
        return self

    def geometry(self) -> Tiling | None:
        if self.tile is None:
            return None
        return Tiling(self.tile, self.stride or self.tile)


@dataclass(frozen=True)
class Tiling:
    """Scoring geometry: square tiles of ``tile`` px whose origins are ``stride`` apart."""

    tile: int
    stride: int

    def __post_init__(self) -> None:
        if self.tile < 1 or self.stride < 1:
            raise ValueError(f"tile and stride must be >= 1, got {self.tile} and {self.stride}")
        if self.stride > self.tile:
            raise ValueError(f"stride {self.stride} > tile {self.tile} would leave pixels that "
                             "no tile scores")  # fmt: skip

    def origins(self, size: int) -> list[int]:
        if self.tile > size:
            raise ValueError(f"tile {self.tile} px is larger than the image side {size} px")
        out = list(range(0, size - self.tile + 1, self.stride))
        if out[-1] != size - self.tile:
            out.append(size - self.tile)
        return out

    def grid(self, height: int, width: int) -> list[tuple[int, int]]:
        """(y, x) origins, row-major."""
        return [(y, x) for y in self.origins(height) for x in self.origins(width)]

    def coverage(self, height: int, width: int) -> np.ndarray:
        """How many tiles cover each pixel: the stitching denominator, >= 1 everywhere."""
        count = np.zeros((height, width), np.float32)
        for y, x in self.grid(height, width):
            count[y : y + self.tile, x : x + self.tile] += 1.0
        return count


def extract_tiles(images: np.ndarray, tiling: Tiling) -> np.ndarray:
    """uint8 (N, C, H, W) -> (N, T, C, tile, tile), tiles in grid order."""
    _, _, h, w = images.shape
    t = tiling.tile
    return np.stack([images[:, :, y : y + t, x : x + t] for y, x in tiling.grid(h, w)], axis=1)


def grid_tiles(
    images: np.ndarray, tiling: Tiling, max_tiles: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """(M, C, tile, tile): every grid tile of as few of the NCHW images as give ``max_tiles``
    (the first ones, or a sorted sample drawn with ``rng``), not every tile of every image."""
    _, c, h, w = images.shape
    n = max(1, min(len(images), -(-max_tiles // len(tiling.grid(h, w)))))
    keep = np.arange(n) if rng is None else np.sort(rng.choice(len(images), n, replace=False))
    return extract_tiles(images[keep], tiling).reshape(-1, c, tiling.tile, tiling.tile)


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
