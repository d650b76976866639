"""Business metrics of the visual-inspection detector.

The model is trained on good images only and gives every image an anomaly
score (higher = more anomalous); the line flags ``score > threshold``
(strictly greater, as in :mod:`granvae.metrics.thresholds`). What a plant
cares about is what these functions report: how many defects are caught at
the agreed false-alarm rate, per defect class and per severity, and how
well the scores rank defects above good parts overall (AUROC).

Conventions, chosen so that a sparse or odd test set never crashes a sweep:
- labels: 0 = good, k = ``class_names[k]`` (a defect class) for k >= 1.
- A rate over an empty set is NaN (``recall_<class>`` for a class with no test
  images, ``recall_at_far`` without defects, ``observed_far`` without good
  images, an empty severity band). The key is still present so tables and
  MLflow logs have a stable schema; ``n_good`` / ``n_defect`` say why.
- ``image_auroc`` is NaN when the test set lacks good or defect images (AUROC
  is undefined with one class); ``pixel_auroc`` likewise when the masks hold
  no defective or no clean pixel.
- Severity bands are right-closed ``(lo, hi]`` because defect severities lie
  in (0, 1] and good images have severity 0; only defect images are counted.

AUPRO is not computed (it needs a connected-component sweep that pays off
only on real pixel annotations); pixel AUROC is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from granvae.metrics.thresholds import Threshold

__all__ = [
    "compute_inspection",
    "per_class_table",
    "image_auroc",
    "pixel_auroc",
    "severity_band_key",
]

DEFAULT_SEVERITY_BANDS: tuple[float, ...] = (0.0, 0.4, 0.7, 1.0)


def _as_threshold(threshold: float | Threshold) -> float:
    """Accept a calibrated ``Threshold`` or a bare number (tests, ad-hoc sweeps)."""
    value = threshold.value if isinstance(threshold, Threshold) else float(threshold)
    if not np.isfinite(value):
        raise ValueError(f"threshold must be finite, got {value!r}")
    return float(value)


def _validate(
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    severity: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Check shapes and values once, so every metric below can trust its inputs."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D (N,), got shape {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels must have shape {s.shape} like scores, got {y.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"scores contains {int(np.sum(~np.isfinite(s)))} NaN/inf value(s)")
    if y.size and (not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(class_names) < 1:
        raise ValueError("class_names must list at least 'good' at index 0")
    if y.size and (y.min() < 0 or y.max() >= len(class_names)):
        raise ValueError(
            f"labels must lie in [0, {len(class_names) - 1}] (class_names), "
            f"got range [{y.min()}, {y.max()}]"
        )
    sev = None
    if severity is not None:
        sev = np.asarray(severity, dtype=np.float64)
        if sev.shape != s.shape:
            raise ValueError(f"severity must have shape {s.shape} like scores, got {sev.shape}")
    return s, y, sev


def _rate(flags: np.ndarray) -> float:
    """Share of True in ``flags``; NaN for an empty set (rate undefined, not zero)."""
    return float(np.mean(flags)) if flags.size else float("nan")


def _auroc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present instead of sklearn's error."""
    y_true = np.asarray(y_true).ravel()
    if y_true.size == 0 or np.all(y_true == y_true[0]):
        return float("nan")
    from sklearn.metrics import roc_auc_score  # lazily: registry commands import this module

    return float(roc_auc_score(y_true, np.asarray(y_score, dtype=np.float64).ravel()))


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Image-level AUROC of defect (label > 0) vs good; threshold-free ranking quality."""
    return _auroc(np.asarray(labels) > 0, scores)


def pixel_auroc(pixel_maps: np.ndarray, masks: np.ndarray) -> float:
    """Pixel-level AUROC over every pixel of every given image (anomalib style).

    Good images are included: their pixels are all negatives, so a map that
    lights up on good parts is penalised. Pass only the test split's maps.
    NaN when the masks hold no defective or no clean pixel.
    """
    maps = np.asarray(pixel_maps, dtype=np.float64)
    gt = np.asarray(masks)
    if maps.shape != gt.shape or maps.ndim != 3:
        raise ValueError(
            f"pixel_maps and masks must both be (N, H, W) of equal shape, "
            f"got {maps.shape} and {gt.shape}"
        )
    if not np.all(np.isfinite(maps)):
        raise ValueError("pixel_maps contains NaN/inf values")
    return _auroc(gt.ravel() > 0, maps.ravel())


def severity_band_key(lo: float, hi: float) -> str:
    """Metric key of a severity band, e.g. ``recall_severity_0.4_0.7``."""

    def fmt(x: float) -> str:
        text = f"{float(x):g}"
        return text if any(c in text for c in ".en") else text + ".0"

    return f"recall_severity_{fmt(lo)}_{fmt(hi)}"


def _class_recalls(
    flagged: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, float]:
    """Recall per defect class; NaN for a class absent from the test set."""
    return {
        f"recall_{name}": _rate(flagged[labels == k]) for k, name in enumerate(class_names) if k
    }


def _severity_recalls(
    flagged: np.ndarray,
    labels: np.ndarray,
    severity: np.ndarray,
    bands: Sequence[float],
) -> dict[str, float]:
    """Recall of defect images per right-closed severity band ``(lo, hi]``."""
    edges = np.asarray(bands, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"severity_bands must be >= 2 increasing edges, got {tuple(bands)}")
    defect = labels > 0
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_band = defect & (severity > lo) & (severity <= hi)
        out[severity_band_key(lo, hi)] = _rate(flagged[in_band])
    return out


def compute_inspection(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float | Threshold,
    class_names: Sequence[str],
    severity: np.ndarray | None = None,
    severity_bands: Sequence[float] = DEFAULT_SEVERITY_BANDS,
    pixel_maps: np.ndarray | None = None,
    masks: np.ndarray | None = None,
) -> dict[str, float]:
    """All inspection metrics of one test set as a flat ``{name: float}`` dict.

    Keys: ``image_auroc``, ``recall_at_far`` (defects flagged), ``observed_far``
    (good images flagged), ``threshold``, ``recall_<class>`` per defect class,
    ``recall_severity_<lo>_<hi>`` per band (only when ``severity`` is given),
    ``n_good``, ``n_defect``, and ``pixel_auroc`` (only when both
    ``pixel_maps`` and ``masks`` are given). Flat floats so the dict can be
    logged to MLflow and compared by the selection policy as is.
    """
    s, y, sev = _validate(scores, labels, class_names, severity)
    thr = _as_threshold(threshold)
    if (pixel_maps is None) != (masks is None):
        raise ValueError("pixel_maps and masks must be given together (or neither)")
    flagged = s > thr
    defect = y > 0
    out: dict[str, float] = {
        "image_auroc": _auroc(defect, s),
        "recall_at_far": _rate(flagged[defect]),
        "observed_far": _rate(flagged[~defect]),
        "threshold": thr,
        "n_good": float(np.sum(~defect)),
        "n_defect": float(np.sum(defect)),
    }
    out.update(_class_recalls(flagged, y, class_names))
    if sev is not None:
        out.update(_severity_recalls(flagged, y, sev, severity_bands))
    if pixel_maps is not None:
        if np.asarray(pixel_maps).shape[:1] != s.shape:
            raise ValueError(
                f"pixel_maps must hold one map per score ({s.shape[0]}), "
                f"got shape {np.asarray(pixel_maps).shape}"
            )
        out["pixel_auroc"] = pixel_auroc(pixel_maps, masks)
    return out


def per_class_table(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float | Threshold,
    class_names: Sequence[str],
    severity: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One row per class (good first) for reports: what the line would do per class.

    Row keys: ``class``, ``n``, ``caught`` (images flagged), ``recall``
    (``caught / n``; for ``good`` this is the observed false-alarm rate),
    ``mean_score``, and ``mean_severity`` when ``severity`` is given. Classes
    absent from the test set keep their row with ``n = 0`` and NaN rates, so
    a report shows the gap instead of hiding it.
    """
    s, y, sev = _validate(scores, labels, class_names, severity)
    flagged = s > _as_threshold(threshold)
    rows: list[dict[str, Any]] = []
    for k, name in enumerate(class_names):
        sel = y == k
        n = int(np.sum(sel))
        row: dict[str, Any] = {
            "class": str(name),
            "n": n,
            "caught": int(np.sum(flagged[sel])),
            "recall": _rate(flagged[sel]),
            "mean_score": float(np.mean(s[sel])) if n else float("nan"),
        }
        if sev is not None:
            row["mean_severity"] = float(np.mean(sev[sel])) if n else float("nan")
        rows.append(row)
    return rows
