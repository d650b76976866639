"""Score full-size parts with a head whose model was trained on tiles.

Each image is covered by the head's tile grid (granvae.scoring.tiling); the tiles go
through the model in batches, their raw maps are stitched (mean over overlaps), the
stitched map is smoothed once and reduced by the rule (max or top-k mean over the whole
part). The latent means and group attribution reported for an image are those of the tile
under the stitched map's maximum (the pixel that decided the score): the tile that explains
the alarm. The edge runtime repeats
these steps in numpy on the graph's tile outputs; the parity tests hold the two together.
"""

from __future__ import annotations

import numpy as np
import torch

from granvae.scoring import maps
from granvae.scoring.head import (
    UNSMOOTHED_TILE_RULES,
    InspectionHead,
    InspectionOutput,
    check_tile_rule,
    outputs_in_batches,
)
from granvae.scoring.tiling import Tiling, extract_tiles, stitch


def topk_pixels(head: InspectionHead, height: int, width: int) -> int:
    """k of the *_topk rules on a full-size part: the same share of its pixels."""
    return max(1, int(round(head.topk_frac * height * width)))


def part_map_and_score(
    tile_maps: torch.Tensor,
    tiling: Tiling,
    height: int,
    width: int,
    kernel: torch.Tensor | None,
    reduction: str,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T, tile, tile) raw tile maps -> the smoothed full-size maps (N, H, W) and the
    parts' scores (N,): stitch, smooth once (not when ``kernel`` is None: the tile-density
    rules), reduce by ``reduction`` ("max" | "topk")."""
    smoothed = stitch(tile_maps, tiling, height, width)
    if kernel is not None:
        smoothed = maps.smooth_map(smoothed, kernel)
    score = maps.max_value(smoothed) if reduction == "max" else maps.topk_mean(smoothed, k)
    return smoothed, score


def explaining_tiles(
    tile_maps: torch.Tensor, smoothed: torch.Tensor, tiling: Tiling
) -> torch.Tensor:
    """(N, T, tile, tile) raw maps and (N, H, W) smoothed part maps -> (N,) index of the tile
    under each part map's maximum; of the tiles covering it, the one with the largest raw
    value there (ties: the lowest index). The edge's tiling.explaining_tile is the twin."""
    n, height, width = smoothed.shape
    flat = smoothed.reshape(n, -1).argmax(1)
    py, px = flat // width, flat % width
    rows = torch.arange(n)
    values = torch.full((n, tile_maps.shape[1]), -torch.inf, dtype=tile_maps.dtype)
    t = tiling.tile
    for k, (y, x) in enumerate(tiling.grid(height, width)):
        inside = (py >= y) & (py < y + t) & (px >= x) & (px < x + t)
        here = tile_maps[rows, k, (py - y).clamp(0, t - 1), (px - x).clamp(0, t - 1)]
        values[:, k] = torch.where(inside, here, values[:, k])
    return values.argmax(1)


@torch.no_grad()
def score_tiled(
    head: InspectionHead,
    images: np.ndarray,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, np.ndarray]:
    """uint8 NCHW full-size images -> score (N,), full-size anomaly_map (N, H, W), and the
    explaining tile's latent_mean (N, D) and group_attribution (N, G)."""
    tiling = head.tiling
    if tiling is None:
        raise ValueError("score_tiled needs a head with tiling set")
    _, reduction = check_tile_rule(head.score_kind)
    head = head.to(device).eval()
    n, c, h, w = images.shape
    n_tiles = len(tiling.grid(h, w))
    k = topk_pixels(head, h, w)
    per_chunk = max(1, batch_size // n_tiles)
    kernel = None if head.score_kind in UNSMOOTHED_TILE_RULES else head.smooth_kernel.cpu()
    out: dict[str, list[np.ndarray]] = {name: [] for name in InspectionOutput._fields}
    for start in range(0, n, per_chunk):
        tiles = extract_tiles(images[start : start + per_chunk], tiling)
        m = len(tiles)
        flat = tiles.reshape(m * n_tiles, c, tiling.tile, tiling.tile)
        per_tile = outputs_in_batches(head.tile_outputs, flat, batch_size, device)
        res = {key: v.reshape(m, n_tiles, *v.shape[1:]) for key, v in per_tile.items()}
        smoothed, score = part_map_and_score(res["anomaly_map"], tiling, h, w, kernel, reduction, k)
        best = explaining_tiles(res["anomaly_map"].reshape(m, n_tiles, tiling.tile, tiling.tile),
                                smoothed, tiling)  # fmt: skip
        rows = torch.arange(m)
        out["score"].append(score.numpy())
        out["anomaly_map"].append(smoothed.numpy())
        out["latent_mean"].append(res["latent_mean"][rows, best].numpy())
        out["group_attribution"].append(res["group_attribution"][rows, best].numpy())
    return {name: np.concatenate(chunks) for name, chunks in out.items()}


@torch.no_grad()
def score_images(
    head: InspectionHead,
    images: np.ndarray,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, np.ndarray]:
    """Score uint8 NCHW images (the dataset layout) in batches; numpy out. A tiled head
    scores full-size images tile by tile (score_tiled).

    It lives here, not in head.py, so that imports go one way (tiled -> head): the head
    knows nothing of tiling's stitching, and this dispatcher needs both."""
    if head.tiling is not None:
        return score_tiled(head, images, batch_size, device)
    out = outputs_in_batches(head.to(device), images, batch_size, device)
    return {name: value.numpy() for name, value in out.items()}
