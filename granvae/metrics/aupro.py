"""AUPRO: the area under the per-region-overlap curve up to a false-positive rate of 30%.

Why not only pixel AUROC: a large defect has many pixels and dominates pixel AUROC, so a
detector that finds one big blob and misses every thin scratch still scores well. The
per-region overlap (Bergmann et al., MVTec AD, 2021) gives each connected defect region
one vote: PRO(t) = mean over regions of the share of the region's pixels above t. The
curve PRO vs pixel FPR (on defect-free pixels of all images) is integrated from 0 to
``max_fpr`` and divided by ``max_fpr``, so a perfect map scores 1 and chance ~max_fpr/2.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["aupro", "pro_curve"]

DEFAULT_MAX_FPR = 0.3
N_THRESHOLDS = 301


def _regions(masks: np.ndarray) -> list[np.ndarray]:
    """Flat pixel indices of every 8-connected defect region of every mask."""
    out = []
    offset = 0
    structure = np.ones((3, 3), dtype=bool)
    for mask in masks:
        labelled, n = ndimage.label(mask > 0, structure=structure)
        flat = labelled.ravel()
        for k in range(1, n + 1):
            out.append(np.flatnonzero(flat == k) + offset)
        offset += mask.size
    return out


def pro_curve(
    maps: np.ndarray, masks: np.ndarray, max_fpr: float = DEFAULT_MAX_FPR
) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro), fpr ascending: thresholds spread evenly over FPR in [0, max_fpr], then the
    first point past max_fpr (the next lower normal value, and finally -inf at FPR 1) so the
    area up to max_fpr can interpolate across tied map values instead of stopping short."""
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps and masks must be (N, H, W) alike, got {maps.shape}, {masks.shape}")
    flat = maps.ravel()
    normal = np.sort(flat[masks.ravel() == 0])
    regions = _regions(masks)
    if normal.size == 0 or not regions:
        raise ValueError("AUPRO needs defect-free pixels and at least one defect region")
    targets = np.linspace(0.0, max_fpr, N_THRESHOLDS)
    thresholds = np.quantile(normal, 1.0 - targets)
    lower = normal[normal < thresholds[-1]]
    beyond = [lower[-1]] if lower.size else []
    thresholds = np.concatenate([thresholds, beyond, [-np.inf]])
    fpr = 1.0 - np.searchsorted(normal, thresholds, side="right") / normal.size
    pro = np.zeros_like(thresholds)
    for idx in regions:
        values = np.sort(flat[idx])
        pro += 1.0 - np.searchsorted(values, thresholds, side="right") / values.size
    return fpr, pro / len(regions)


def aupro(maps: np.ndarray, masks: np.ndarray, max_fpr: float = DEFAULT_MAX_FPR) -> float:
    """Normalised area under PRO(FPR) on [0, max_fpr]; NaN without regions or normal pixels.

    The curve is linear between measured points, also across a jump where many pixels share
    one map value (a constant map scores the chance 0.15 at max_fpr 0.3, not 0)."""
    try:
        fpr, pro = pro_curve(maps, masks, max_fpr)
    except ValueError as err:
        if "needs defect-free" in str(err):
            return float("nan")
        raise
    last = int(np.searchsorted(fpr, max_fpr, side="right")) - 1  # last point <= max_fpr
    x, y = fpr[: last + 1], pro[: last + 1]
    if x[-1] < max_fpr:  # interpolate to max_fpr on the segment that crosses it
        x1, y1 = fpr[last + 1], pro[last + 1]
        y_end = y[-1] + (y1 - y[-1]) * (max_fpr - x[-1]) / (x1 - x[-1])
        x, y = np.append(x, max_fpr), np.append(y, y_end)
    return float(np.trapezoid(y, x) / max_fpr)
