"""Heatmap overlays: where on the part the model sees the anomaly.

An operator judging a reject needs the location, not a number; a grey copy of the inspected
image with the anomaly map in red is readable on any screen and needs only Pillow.

The map arrives on the fixed scale where 1.0 is the threshold (``Inspector.normalised_map``)
and is drawn on that scale for every image: red opacity grows linearly to OVERLAY_ALPHA at
FIXED_CEILING times the threshold. A good part therefore stays faint and a defective one shows
red, instead of each image being stretched to its own range (which painted good parts as red
as defective ones).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

OVERLAY_ALPHA = 0.6
FIXED_CEILING = 2.0  # the map value (in thresholds) drawn at full red


def normalise(amap: np.ndarray) -> np.ndarray:
    """Threshold-scaled map -> [0, 1] on the fixed scale (1.0 = threshold -> 0.5)."""
    m = np.nan_to_num(np.asarray(amap, dtype=np.float64), nan=0.0, posinf=FIXED_CEILING)
    return np.clip(m / FIXED_CEILING, 0.0, 1.0)


def overlay(model_input: np.ndarray, amap: np.ndarray) -> Image.Image:
    """Grey version of the (H, W, C) model input with the threshold-scaled map in red."""
    img = np.asarray(model_input, dtype=np.float64)
    gray = img.mean(axis=2) if img.ndim == 3 else img
    m = normalise(amap)
    if m.shape != gray.shape:
        # The map is defined on the model's grid; match it rather than crash on an odd export.
        resized = Image.fromarray((m * 255).astype(np.uint8)).resize(gray.shape[::-1])
        m = np.asarray(resized, dtype=np.float64) / 255.0
    a = OVERLAY_ALPHA * m
    rgb = np.stack([gray * (1 - a) + 255.0 * a, gray * (1 - a), gray * (1 - a)], axis=2)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")


def write_overlay(path: Path, model_input: np.ndarray, amap: np.ndarray) -> Path:
    """Write the overlay PNG to ``path`` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay(model_input, amap).save(path, format="PNG")
    return path
