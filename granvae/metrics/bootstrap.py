"""Bootstrap intervals for the business metric: recall at a calibrated false-alarm rate.

Why a bootstrap and not a binomial formula: the recall that the line sees depends on two
samples, the good images the threshold was calibrated on and the defects it was tested
on. Resampling both (and recalibrating the threshold in every replicate with the same
order-statistic rule as :mod:`granvae.metrics.thresholds`) puts the threshold's own
noise into the interval. With 128 defects and 256 good images a difference of 2 caught
defects is well inside that noise; the selection policy and promotion must know it.

Pure numpy, deterministic for a given ``rng``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from granvae.metrics.thresholds import conformal_rank

__all__ = [
    "Interval",
    "percentile_interval",
    "recall_interval",
    "paired_recall_difference",
    "replicate_recalls",
    "resample_indices",
    "thresholds_from_resamples",
]

DEFAULT_BOOT = 2000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float = DEFAULT_LEVEL

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {prefix: self.estimate, f"{prefix}_lo": self.low, f"{prefix}_hi": self.high}


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The (1-level)/2 and (1+level)/2 quantiles of bootstrap replicates."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    s = np.asarray(samples, dtype=np.float64)
    lo, hi = np.quantile(s, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def _order_index(n: int, far: float) -> int:
    """0-based index of the conformal order statistic, k = ceil((1 - far)(n + 1)), clamped
    to the largest score when n + 1 < 1 / far (thresholds.conformal_rank)."""
    return conformal_rank(n, far) - 1


def thresholds_from_resamples(good: np.ndarray, idx: np.ndarray, far: float) -> np.ndarray:
    """Threshold of each bootstrap replicate of the good scores (rows of ``idx``)."""
    k = _order_index(idx.shape[1], far)
    return np.partition(good[idx], k, axis=1)[:, k]


def _check(name: str, scores: np.ndarray) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN/inf values")
    return arr


def recall_interval(
    good_scores: np.ndarray,
    defect_scores: np.ndarray,
    false_alarm_rate: float,
    n_boot: int = DEFAULT_BOOT,
    level: float = DEFAULT_LEVEL,
    rng: np.random.Generator | None = None,
    threshold: float | None = None,
) -> Interval:
    """Recall of ``defect_scores`` above a threshold calibrated on ``good_scores``.

    The estimate uses ``threshold`` when given (the one the candidate ships with),
    else the order statistic of ``good_scores``. Replicates resample the good and the
    defect scores independently and recalibrate, so the interval covers both sources.
    """
    good = _check("good_scores", good_scores)
    defect = _check("defect_scores", defect_scores)
    rng = rng or np.random.default_rng(0)
    thr = good[_order_index_sorted(good, false_alarm_rate)] if threshold is None else threshold
    estimate = float(np.mean(defect > thr))
    gi, di = resample_indices(rng, n_boot, good.size, defect.size)
    reps = replicate_recalls(good, defect, gi, di, false_alarm_rate)
    return Interval(estimate, *percentile_interval(reps, level), level=level)


def resample_indices(
    rng: np.random.Generator, n_boot: int, n_good: int, n_defect: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap row indices for the good and the defect images, one row per replicate.
    Reusing them for several detectors pairs their replicates on the same images."""
    return (rng.integers(0, n_good, size=(n_boot, n_good)),
            rng.integers(0, n_defect, size=(n_boot, n_defect)))  # fmt: skip


def replicate_recalls(
    good: np.ndarray, defect: np.ndarray, gi: np.ndarray, di: np.ndarray, far: float
) -> np.ndarray:
    """Recall in each replicate: threshold recalibrated on the resampled good scores."""
    return np.mean(defect[di] > thresholds_from_resamples(good, gi, far)[:, None], axis=1)


def _order_index_sorted(good: np.ndarray, far: float) -> np.ndarray:
    """Index into ``good`` of its calibrated order statistic."""
    order = np.argsort(good, kind="stable")
    return order[_order_index(good.size, far)]


def paired_recall_difference(
    good_a: np.ndarray,
    defect_a: np.ndarray,
    good_b: np.ndarray,
    defect_b: np.ndarray,
    false_alarm_rate: float,
    n_boot: int = DEFAULT_BOOT,
    level: float = DEFAULT_LEVEL,
    rng: np.random.Generator | None = None,
) -> Interval:
    """recall(a) - recall(b) for two detectors scored on the *same* images.

    Pairing (one set of resampling indices for both) removes the image-to-image noise
    that two separate intervals would double count, so a real difference shows sooner:
    what promotion needs when champion and challenger are scored on one evaluation set.
    """
    ga, da = _check("good_a", good_a), _check("defect_a", defect_a)
    gb, db = _check("good_b", good_b), _check("defect_b", defect_b)
    if ga.size != gb.size or da.size != db.size:
        raise ValueError(
            "paired comparison needs both detectors scored on the same images: "
            f"good {ga.size} vs {gb.size}, defect {da.size} vs {db.size}"
        )
    rng = rng or np.random.default_rng(0)
    far = false_alarm_rate
    est = float(
        np.mean(da > ga[_order_index_sorted(ga, far)])
        - np.mean(db > gb[_order_index_sorted(gb, far)])
    )
    gi, di = resample_indices(rng, n_boot, ga.size, da.size)
    ra = replicate_recalls(ga, da, gi, di, far)
    rb = replicate_recalls(gb, db, gi, di, far)
    return Interval(est, *percentile_interval(ra - rb, level), level=level)
