"""What a training frame looks like: grey window, frame statistics and the frame contract.

The edge refuses frames the model was not trained to see (deploy/granvae_edge/contract.py).
What "trained to see" means is measured here, on the training data, and written into the
bundle's manifest as ``frame_contract`` by the exporter:

- the working size and the sizes of the source images before the import resized them (the
  data store's ``source`` block, written by ``granvae data import``);
- the bit depth and grey window the import mapped to 0..255 (8-bit: 0..255; a mono-12 camera:
  0..4095), so the edge maps 16-bit frames through the same window;
- ranges of three frame statistics over the good training frames (mean grey, contrast,
  sharpness), widened by a margin, which catch dead, blank, saturated and out-of-focus frames.

``frame_stats`` must equal the edge's ``contract.frame_stats`` number for number (the edge
package cannot import granvae; tests/test_frame_contract.py holds them together).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

STATS = ("mean", "contrast", "sharpness")
# Margins around the range seen on good frames: a fraction of the observed spread plus an
# absolute floor (grey levels), so a line with very uniform frames still tolerates normal drift.
SPREAD_MARGIN = 0.5
FLOORS = {"mean": 12.0, "contrast": 3.0, "sharpness": 1.0}
# Sharpness falls by a factor under blur; its lower bound is also never above this share of
# the sharpest-blurred good frame's value (so a 2x blur is caught, 20% jitter is not).
SHARPNESS_MIN_SHARE = 0.6
BLOCK_ROWS = 256  # training frames whose statistics are computed at a time


def frame_stats(gray: np.ndarray) -> dict[str, float]:
    """Mean grey, contrast (standard deviation), sharpness (mean |4-neighbour Laplacian|).

    ``gray`` is a (H, W) or (H, W, C) uint8 frame at the working size; channels are averaged.
    """
    x = np.asarray(gray, dtype=np.float32)
    if x.ndim == 3:
        x = x.mean(axis=2, dtype=np.float32)
    mean = float(x.mean(dtype=np.float64))
    contrast = float(x.std(dtype=np.float64))
    if min(x.shape) < 3:
        return {"mean": mean, "contrast": contrast, "sharpness": 0.0}
    lap = 4.0 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2] - x[1:-1, 2:]
    return {"mean": mean, "contrast": contrast, "sharpness": float(np.abs(lap).mean())}


def chw_to_hwc(image: np.ndarray) -> np.ndarray:
    """A dataset row (C, H, W) as the edge sees a frame (H, W, C)."""
    return np.moveaxis(np.asarray(image), 0, -1)


def fit_ranges(stats: Iterable[Mapping[str, float]]) -> dict[str, list[float]]:
    """[low, high] per statistic from good frames' statistics (see the margins above)."""
    table = {name: [] for name in STATS}
    for row in stats:
        for name in STATS:
            table[name].append(float(row[name]))
    if not table["mean"]:
        raise ValueError("fit_ranges needs at least one good frame")
    ranges: dict[str, list[float]] = {}
    for name, values in table.items():
        lo, hi = min(values), max(values)
        margin = SPREAD_MARGIN * (hi - lo) + FLOORS[name]
        low, high = max(0.0, lo - margin), hi + margin
        if name == "sharpness":
            low = min(low, SHARPNESS_MIN_SHARE * lo)
        ranges[name] = [round(low, 4), round(high, 4)]
    return ranges


def good_frame_ranges(images: np.ndarray) -> dict[str, list[float]]:
    """Frame-sanity ranges from (N, C, H, W) uint8 good training frames."""
    images = np.asarray(images)
    stats = (frame_stats(chw_to_hwc(images[i])) for i in range(len(images)))
    return fit_ranges(stats)


def source_block(
    sizes: Iterable[tuple[int, int]], working_hw: tuple[int, int], bit_depth: int, channels: int
) -> dict[str, Any]:
    """The data store's ``source`` block: what import read, before it resized or windowed.

    ``sizes`` are (height, width) of the source images; ``resized`` says whether any of them
    went through the bilinear resize to the working size (the edge then may repeat it).
    """
    unique = sorted({(int(h), int(w)) for h, w in sizes})
    return {
        "sizes": [list(s) for s in unique],
        "working_size": [int(v) for v in working_hw],
        "bit_depth": int(bit_depth),
        "window": list(bit_window(bit_depth)),
        "channels": int(channels),
        "resized": any(s != tuple(working_hw) for s in unique),
    }


def bit_window(bit_depth: int) -> tuple[int, int]:
    """The grey window of a camera bit depth: 8 -> 0..255, 12 -> 0..4095, 16 -> 0..65535."""
    if not isinstance(bit_depth, int) or not 8 <= bit_depth <= 16:
        raise ValueError(f"bit depth must be an integer 8..16, got {bit_depth!r}")
    return 0, 2**bit_depth - 1


def window_lut(low: int, high: int) -> np.ndarray:
    """uint8 lookup table for 16-bit values: low..high -> 0..255 rounded (the edge's formula)."""
    values = np.arange(65536, dtype=np.int64)
    scaled = ((np.clip(values, low, high) - low) * 255 + (high - low) // 2) // (high - low)
    return scaled.astype(np.uint8)


def frame_contract(
    source: Mapping[str, Any] | None,
    working_hw: tuple[int, int],
    channels: int,
    good_images: np.ndarray,
) -> dict[str, Any]:
    """The manifest's ``frame_contract`` block from the data store's ``source`` block (None for
    data made by ``granvae data generate``: 8-bit frames at the working size) and the good
    training frames (N, C, H, W) at the working size."""
    working = [int(v) for v in working_hw]
    if source is None:
        source = source_block([tuple(working)], tuple(working), 8, channels)
    if [int(v) for v in source.get("working_size", working)] != working:
        raise ValueError(
            f"data store source.working_size {source.get('working_size')} differs from the "
            f"model's working size {working}"
        )
    return {
        "working_size": working,
        "source_sizes": [[int(h), int(w)] for h, w in source["sizes"]],
        "bit_depth": int(source["bit_depth"]),
        "window": [int(v) for v in source["window"]],
        "channels": int(source["channels"]),
        "resize": "bilinear" if source.get("resized") else "none",
        "ranges": good_frame_ranges(good_images),
        "fitted_on": f"{len(good_images)} good training frames",
    }
