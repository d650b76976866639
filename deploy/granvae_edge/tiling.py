"""Tile geometry, stitching, smoothing and reduction in numpy: the edge twin of training's tiling.

A high-resolution part is scored as square tiles of the model's input size; the per-tile maps
are stitched back into one full-size map (mean where tiles overlap, so a constant map stays
constant across tile borders), smoothed with a Gaussian (reflect padding, no dark border) and
reduced to one image score. Every step follows the tiling contract that training's torch twin
(granvae/scoring/tiling.py) follows too, so a threshold calibrated in training means the same
thing here. Pure numpy: a device installs no torch and no scipy.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

REDUCES = ("max", "topk")


def origins(size: int, tile: int, stride: int) -> list[int]:
    """Tile start offsets along one axis; the last tile always ends at the border.

    A stride that does not divide ``size - tile`` still covers the border with one extra tile
    placed at ``size - tile`` (it overlaps its neighbour more than the others do).
    """
    if tile > size:
        raise ValueError(f"tile {tile} is larger than the image side {size}")
    if tile < 1 or stride < 1:
        raise ValueError(f"tile and stride must be >= 1, got tile {tile}, stride {stride}")
    found = list(range(0, size - tile + 1, stride))
    if found[-1] != size - tile:
        found.append(size - tile)
    return found


def tile_origins(height: int, width: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """(y, x) of every tile, row-major: the order tiles go to the graph and come back."""
    xs = origins(width, tile, stride)
    return [(y, x) for y in origins(height, tile, stride) for x in xs]


def extract_tiles(image: np.ndarray, tile: int, stride: int) -> np.ndarray:
    """(H, W) or (H, W, C) image -> (N, tile, tile[, C]) contiguous tiles, row-major."""
    height, width = image.shape[:2]
    if _exact_grid(height, width, tile, stride):
        rest = image.shape[2:]
        grid_view = image.reshape(height // tile, tile, width // tile, tile, *rest).swapaxes(1, 2)
        return np.ascontiguousarray(grid_view).reshape(-1, tile, tile, *rest)
    grid = tile_origins(height, width, tile, stride)
    out = np.empty((len(grid), tile, tile, *image.shape[2:]), dtype=image.dtype)
    for i, (y, x) in enumerate(grid):
        out[i] = image[y : y + tile, x : x + tile]
    return out


def stitch(tile_maps: np.ndarray, height: int, width: int, stride: int) -> np.ndarray:
    """(N, tile, tile) per-tile maps -> (H, W) float32 map, the mean over overlapping tiles."""
    maps = np.asarray(tile_maps, dtype=np.float32)
    tile = maps.shape[-1]
    grid = tile_origins(height, width, tile, stride)
    if maps.shape != (len(grid), tile, tile):
        raise ValueError(
            f"{height}x{width} at tile {tile} stride {stride} has {len(grid)} tiles; "
            f"got maps of shape {maps.shape}"
        )
    if _exact_grid(height, width, tile, stride):  # no overlap: stitching is a reshape
        grid_view = maps.reshape(height // tile, width // tile, tile, tile).swapaxes(1, 2)
        return np.ascontiguousarray(grid_view).reshape(height, width)
    canvas = np.zeros((height, width), dtype=np.float32)
    for m, (y, x) in zip(maps, grid, strict=True):
        canvas[y : y + tile, x : x + tile] += m
    # The tiles form a grid, so a pixel's cover count is (tiles over its row) x (over its col).
    return canvas / np.outer(_cover(height, tile, stride), _cover(width, tile, stride))


def _exact_grid(height: int, width: int, tile: int, stride: int) -> bool:
    """Non-overlapping tiles that fit the image exactly (the common production geometry)."""
    return stride == tile and height % tile == 0 and width % tile == 0


def _cover(size: int, tile: int, stride: int) -> np.ndarray:
    """How many tiles cover each position along one axis."""
    count = np.zeros(size, dtype=np.float32)
    for o in origins(size, tile, stride):
        count[o : o + tile] += 1.0
    return count


def gaussian_1d(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of radius ceil(3 sigma); its outer product is the 2-D kernel."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = int(math.ceil(3.0 * sigma))
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


# Rows (or columns) per matrix product in smooth(): small enough that OpenBLAS runs each
# product on the calling thread (no BLAS worker threads spinning against onnxruntime's).
_SMOOTH_CHUNK = 48
_SMOOTH_BLOCK = 64


@functools.lru_cache(maxsize=8)
def _band(sigma: float, block: int) -> np.ndarray:
    """(block + 2r, block) matrix B with (row @ B)[j] = sum_k g[k] row[j + k]: one block of
    the 1-D correlation, the same for every block (the kernel does not move)."""
    g = gaussian_1d(sigma).astype(np.float32)
    span = len(g) - 1
    band = np.zeros((block + span, block), dtype=np.float32)
    for j in range(block):
        band[j : j + span + 1, j] = g
    band.setflags(write=False)
    return band


def smooth(amap: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) map correlated with outer(g, g) after reflect padding; float32 out.

    Separable: a pass along the width, then along the height, each as small matrix products
    with a banded block (_band): a 1024 px map takes ~12 ms, a shifted-slice loop over the
    13 taps ~5x longer (memory bound). Matches a direct float64 2-D correlation to ~1e-6
    relative.
    """
    g = gaussian_1d(sigma)
    r = len(g) // 2
    height, width = amap.shape
    if r >= min(height, width):
        raise ValueError(f"smoothing radius {r} needs a map larger than {height}x{width}")
    padded = np.pad(np.asarray(amap, dtype=np.float32), r, mode="reflect")
    bw, bh = min(_SMOOTH_BLOCK, width), min(_SMOOTH_BLOCK, height)
    across, down = _band(float(sigma), bw), _band(float(sigma), bh).T
    rows = np.empty((height + 2 * r, width), dtype=np.float32)
    for x in origins(width, bw, bw):
        for y in range(0, height + 2 * r, _SMOOTH_CHUNK):
            rows[y : y + _SMOOTH_CHUNK, x : x + bw] = (
                padded[y : y + _SMOOTH_CHUNK, x : x + bw + 2 * r] @ across
            )
    out = np.empty((height, width), dtype=np.float32)
    for y in origins(height, bh, bh):
        for x in range(0, width, _SMOOTH_CHUNK):
            cols = slice(x, x + _SMOOTH_CHUNK)
            out[y : y + bh, cols] = down @ rows[y : y + bh + 2 * r, cols]
    return out


def reduce_map(amap: np.ndarray, reduce: str, topk: int | None = None) -> float:
    """Image score from the smoothed map: its max, or the mean of its ``topk`` largest values."""
    flat = np.asarray(amap, dtype=np.float32).ravel()
    if reduce == "max":
        return float(flat.max())
    if reduce == "topk":
        if topk is None or not 1 <= topk <= flat.size:
            raise ValueError(f"topk must be in 1..{flat.size}, got {topk}")
        top = np.partition(flat, flat.size - topk)[flat.size - topk :]
        return float(top.astype(np.float64).mean())
    raise ValueError(f"reduce must be one of {REDUCES}, got {reduce!r}")


def explaining_tile(
    tile_maps: np.ndarray, image_map: np.ndarray, origins: list[tuple[int, int]], tile: int
) -> int:
    """The tile under the image map's maximum, the pixel that decided the score.

    Of the tiles covering that pixel (first maximum in row-major order), the one whose own
    raw map is largest there; ties go to the lowest index. Not the tile with the largest raw
    peak: smoothing and overlap averaging can move the image's maximum to another tile.
    """
    py, px = np.unravel_index(int(np.argmax(image_map)), image_map.shape)
    maps = np.asarray(tile_maps).reshape(len(origins), tile, tile)
    best, best_value = 0, -np.inf
    for k, (y, x) in enumerate(origins):
        if y <= py < y + tile and x <= px < x + tile and maps[k, py - y, px - x] > best_value:
            best, best_value = k, float(maps[k, py - y, px - x])
    return best


@dataclass(frozen=True)
class Tiling:
    """The manifest's validated ``tiling`` block (see manifest.check_tiling)."""

    tile: int
    stride: int
    image_height: int
    image_width: int
    smooth_sigma: float
    reduce: str
    topk: int | None = None
    map: str = ""

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> Tiling | None:
        """The block as an object, or None for a whole-image bundle (no block, or null)."""
        block = manifest.get("tiling")
        if block is None:
            return None
        return cls(
            tile=int(block["tile"]),
            stride=int(block["stride"]),
            image_height=int(block["image_height"]),
            image_width=int(block["image_width"]),
            smooth_sigma=float(block["smooth_sigma"]),
            reduce=str(block["reduce"]),
            topk=int(block["topk"]) if block.get("topk") is not None else None,
            map=str(block.get("map", "")),
        )

    @property
    def n_tiles(self) -> int:
        return len(tile_origins(self.image_height, self.image_width, self.tile, self.stride))

    def tiles(self, image: np.ndarray) -> np.ndarray:
        return extract_tiles(image, self.tile, self.stride)

    def image_map(self, tile_maps: np.ndarray) -> np.ndarray:
        """Stitched and smoothed (H, W) map: the map the image score is read from.
        ``smooth_sigma`` 0: stitched only (tile-density rules; overlapping tiles average)."""
        stitched = stitch(tile_maps, self.image_height, self.image_width, self.stride)
        return smooth(stitched, self.smooth_sigma) if self.smooth_sigma > 0 else stitched

    def score(self, image_map: np.ndarray) -> float:
        return reduce_map(image_map, self.reduce, self.topk)

    def explaining_tile(self, tile_maps: np.ndarray, image_map: np.ndarray) -> int:
        origins = tile_origins(self.image_height, self.image_width, self.tile, self.stride)
        return explaining_tile(tile_maps, image_map, origins, self.tile)
