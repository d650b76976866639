"""Score one full-size image with a tiled bundle: tiles in, one stitched map and score out.

The graph sees only tiles of its input size; everything that makes the image's verdict
(stitching, smoothing, the reduction to one score, which tile explains it) happens here in
numpy, per the tiling contract (tiling.py); the explaining tile is the one under the
stitched map's maximum. Tiles go to onnxruntime in batches of up to
TILE_BATCH: large enough for its conv kernels to run near peak, small enough that a 2048 px
image does not hold every tile's activations at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .tiling import Tiling

TILE_BATCH = 64
OUTPUTS = ["score", "anomaly_map", "group_attribution"]


@dataclass(frozen=True)
class TiledResult:
    """One image's outputs before the decision: score, full-size smoothed map, attribution."""

    score: float
    anomaly_map: np.ndarray
    attribution: np.ndarray
    explaining_tile: int


def run_tiles(
    session: ort.InferenceSession, input_name: str, tiles: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-tile (score, raw map, attribution), the tiles sent in batches of TILE_BATCH."""
    parts: list[list[np.ndarray]] = [[], [], []]
    for start in range(0, len(tiles), TILE_BATCH):
        outs = session.run(OUTPUTS, {input_name: tiles[start : start + TILE_BATCH]})
        for acc, out in zip(parts, outs, strict=True):
            acc.append(np.asarray(out))
    score, amap, attribution = (np.concatenate(p) for p in parts)
    return score.reshape(len(tiles), -1)[:, 0], amap, attribution.reshape(len(tiles), -1)


def score_image(
    session: ort.InferenceSession, input_name: str, tiling: Tiling, image: np.ndarray
) -> TiledResult:
    """(image_height, image_width, C) model-ready image -> its tiled verdict's numbers."""
    _, tile_maps, attribution = run_tiles(session, input_name, tiling.tiles(image))
    image_map = tiling.image_map(tile_maps)
    best = tiling.explaining_tile(tile_maps, image_map)
    return TiledResult(
        score=tiling.score(image_map),
        anomaly_map=image_map,
        attribution=attribution[best],
        explaining_tile=best,
    )
