"""What a tiled head ships: the manifest's ``tiling`` block, the tiles the parity gate
runs on, and full-size scores from the exported graph (promotion compares bundles).

The graph of a tiled head scores tiles (granvae.scoring.head.TileGraph); the steps from
tiles to a part's score are the ones granvae.scoring.tiled takes in torch and the edge
takes in numpy, written down in the ``tiling`` block so a device needs nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from granvae.export.graph import run_session
from granvae.scoring import maps
from granvae.scoring.head import TILE_RULES, UNSMOOTHED_TILE_RULES, InspectionHead
from granvae.scoring.tiled import part_map_and_score, topk_pixels
from granvae.scoring.tiling import Tiling, extract_tiles, grid_tiles

PARITY_TILES = 256  # tiles the parity gate compares (a sample of the val images' grid)


def tiling_block(head: InspectionHead, height: int, width: int) -> dict[str, Any]:
    """The manifest block (docs/contracts.md, "tiling"); ``smooth_sigma`` 0 = the stitched
    map is reduced unsmoothed (the tile-density rules)."""
    tiling = head.tiling
    if tiling is None:
        raise ValueError("tiling_block needs a tiled head")
    raw, reduction = TILE_RULES[head.score_kind]
    tiling.grid(height, width)  # refuses a tile larger than the part
    block: dict[str, Any] = {
        "tile": tiling.tile, "stride": tiling.stride,
        "image_height": int(height), "image_width": int(width),
        "map": raw.removesuffix("_raw"), "reduce": reduction,
        "smooth_sigma": 0.0 if head.score_kind in UNSMOOTHED_TILE_RULES else head.smooth_sigma,
    }  # fmt: skip
    if reduction == "topk":
        block["topk"] = topk_pixels(head, height, width)
    return block


def parity_tiles(images: np.ndarray, tiling: Tiling, limit: int = PARITY_TILES) -> np.ndarray:
    """NHWC uint8 tiles of the scoring grid of NCHW images, evenly sampled to ``limit``."""
    tiles = grid_tiles(images, tiling, limit)
    keep = np.linspace(0, len(tiles) - 1, min(limit, len(tiles))).round().astype(int)
    return np.ascontiguousarray(tiles[keep].transpose(0, 2, 3, 1))


def onnx_tiled_scores(
    session: ort.InferenceSession, images: np.ndarray, block: Mapping[str, Any]
) -> np.ndarray:
    """Full-size part scores from a tiled graph and its manifest block (NCHW uint8 in)."""
    tiling = Tiling(int(block["tile"]), int(block["stride"]))
    sigma = float(block["smooth_sigma"])
    kernel = maps.gaussian_kernel(sigma) if sigma > 0 else None
    _, c, h, w = images.shape
    n_tiles = len(tiling.grid(h, w))
    scores = []
    for image in images:
        tiles = extract_tiles(image[None], tiling).reshape(n_tiles, c, tiling.tile, tiling.tile)
        raw = run_session(session, np.ascontiguousarray(tiles.transpose(0, 2, 3, 1)))
        tile_maps = torch.from_numpy(raw["anomaly_map"])[None]
        _, score = part_map_and_score(
            tile_maps, tiling, h, w, kernel, block["reduce"], int(block.get("topk", 1))
        )
        scores.append(float(score[0]))
    return np.asarray(scores, np.float32)
