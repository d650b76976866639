"""Tile geometry and the `tiling` block of params.yaml: numpy only, no torch.

granvae.config validates `tiling` whenever a command reads params.yaml, so the geometry it
checks (stride <= tile) must not cost a torch import (benchmarks/cli_startup.py).
granvae.scoring.tiling re-exports all of this beside the torch halves (stitch,
random_tiles) and states the contract shared with the edge runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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
