"""Decision-threshold calibration on held-out good images.

The line runs ``defect iff score > threshold`` (strictly greater, everywhere:
here, in :mod:`granvae.metrics.inspection` and in the edge runtime). A plant
states its tolerance as a false-alarm rate, the share of good parts it accepts
to reject, so the threshold is set from good images alone: the model never
sees a defect during training, and labelled defects are too rare to tune on.

The rule is the conformal order statistic (split conformal prediction): with
``n`` good scores sorted ascending ``s_(1) <= ... <= s_(n)``, the threshold is
``s_(k)`` with ``k = ceil((1 - far) * (n + 1))``. A new good part from the same
distribution is exchangeable with the calibration parts, so its score exceeds
``s_(k)`` with probability ``(n + 1 - k) / (n + 1) <= far``: the expected
false-alarm rate *on the line* is at most ``far``, not only on the calibration
images. (The plain empirical quantile ``ceil((1 - far) * n)`` keeps its promise
on the calibration images only; at n = 256, far = 1% its line rate averages
1.17% and exceeds 1% in about half of all calibrations.)

The rate of one calibrated line is itself random (it depends on which good
images were drawn): it follows Beta(n + 1 - k, k). :func:`false_alarm_upper_bound`
gives its one-sided upper confidence bound, which the manifest carries beside
``n``, ``far`` and the guarantee, so a plant reads how bad its rate may be.

When ``n + 1 < 1 / far`` no order statistic keeps the promise (``k > n``): the
threshold is the largest good score, the guarantee does not hold, and the
upper bound says by how much. This is logged as a warning rather than raised,
because tiny calibration sets are legitimate in smoke tests and demos.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "Threshold",
    "calibrate_threshold",
    "conformal_rank",
    "false_alarm_upper_bound",
    "ORDER_STATISTIC",
]

logger = logging.getLogger(__name__)

ORDER_STATISTIC = "conformal_order_statistic"
"""Method name recorded for :func:`calibrate_threshold` (see the module docstring)."""

# ceil((1 - far)(n + 1)) is computed with a tiny tolerance so that e.g. far=0.01,
# n=99 ((1 - 0.01) * 100 == 99.00000000000001 in floating point) gives k = 99 as the
# real-number rule says.
_CEIL_EPS = 1e-9
UPPER_BOUND_CONFIDENCE = 0.95


def conformal_rank(n: int, false_alarm_rate: float) -> int:
    """1-based rank k = ceil((1 - far)(n + 1)) of the threshold among n ascending good
    scores, clamped to n (the largest score) when n + 1 < 1 / far."""
    return min(int(n), int(math.ceil((1.0 - false_alarm_rate) * (n + 1) - _CEIL_EPS)))


def _log_binom_tail(n: int, p: float, k: int) -> float:
    """log P(Binomial(n, p) >= k), summed in log space (no scipy: the edge has the twin)."""
    if k <= 0:
        return 0.0
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq
        for j in range(k, n + 1)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def false_alarm_upper_bound(
    n: int, k: int, confidence: float = UPPER_BOUND_CONFIDENCE
) -> float:
    """Upper ``confidence`` bound on the line's false-alarm rate for a threshold at the
    k-th of n good scores.

    The line's rate is 1 - F(s_(k)) ~ Beta(n + 1 - k, k) for continuous scores, and
    P(rate > u) = P(Binomial(n, 1 - u) >= k); bisection finds the u where that is
    1 - confidence.
    """
    if not 1 <= k <= n:
        raise ValueError(f"rank k must be in [1, n={n}], got {k}")
    target = math.log1p(-confidence)
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if _log_binom_tail(n, 1.0 - mid, k) > target:
            lo = mid
        else:
            hi = mid
    return hi


def _check_far(false_alarm_rate: float) -> float:
    """Validate a false-alarm rate; 0 and 1 are refused because they degenerate."""
    far = float(false_alarm_rate)
    if not (math.isfinite(far) and 0.0 < far < 1.0):
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate!r}")
    return far


@dataclass(frozen=True)
class Threshold:
    """A calibrated decision threshold: defect iff ``score > value``.

    Kept with how it was obtained (target rate, number of good images, method)
    because the edge bundle and the model registry must say how the line's
    decision was calibrated, not just the number.
    """

    value: float
    false_alarm_rate: float
    n_images: int
    method: str = ORDER_STATISTIC

    @property
    def rank(self) -> int:
        """k of the conformal rule for these n and far."""
        return conformal_rank(self.n_images, self.false_alarm_rate)

    @property
    def guarantee_holds(self) -> bool:
        """False when n + 1 < 1 / far: even the largest good score cannot keep the promise."""
        return math.ceil((1.0 - self.false_alarm_rate) * (self.n_images + 1) - _CEIL_EPS) <= (
            self.n_images
        )

    def guarantee(self) -> dict[str, Any]:
        """What the threshold promises about new good parts, in the manifest's words."""
        n, k, far = self.n_images, self.rank, self.false_alarm_rate
        expected = (n + 1 - k) / (n + 1)
        if self.guarantee_holds:
            text = (
                f"expected false-alarm rate on new good parts <= {far:g} "
                f"(= {expected:.4g}; conformal rank k={k} of n={n})"
            )
        else:
            text = (
                f"NOT guaranteed: n={n} good images are too few for {far:g} "
                f"(need n >= {math.ceil(1.0 / far - 1.0 - _CEIL_EPS)}); the largest score is used"
            )
        return {
            "rank": k,
            "guarantee": text,
            "expected_false_alarm_rate": expected,
            "false_alarm_rate_upper_95": false_alarm_upper_bound(n, k),
        }

    def __post_init__(self) -> None:
        if not math.isfinite(float(self.value)):
            raise ValueError(f"value must be finite, got {self.value!r}")
        _check_far(self.false_alarm_rate)
        if int(self.n_images) < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_images!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the ``threshold`` block of the bundle manifest)."""
        return {**asdict(self), **self.guarantee()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Threshold:
        """Rebuild from :meth:`to_dict` output.

        Unknown keys (``score``, ``calibrated_on``, ``date`` in the bundle
        manifest) are ignored so a manifest's threshold block can be read
        directly; ``method`` defaults to the order statistic.
        """
        missing = [k for k in ("value", "false_alarm_rate", "n_images") if k not in data]
        if missing:
            raise ValueError(f"threshold dict lacks field(s): {', '.join(missing)}")
        return cls(
            value=float(data["value"]),
            false_alarm_rate=float(data["false_alarm_rate"]),
            n_images=int(data["n_images"]),
            method=str(data.get("method", ORDER_STATISTIC)),
        )

    def is_defect(self, scores: np.ndarray) -> np.ndarray:
        """Apply the line's decision rule (strictly greater) to an array of scores."""
        return np.asarray(scores, dtype=np.float64) > self.value


def calibrate_threshold(good_scores: np.ndarray, false_alarm_rate: float = 0.01) -> Threshold:
    """Choose the threshold so that a new good part exceeds it with probability <= far.

    Args:
        good_scores: anomaly scores of held-out good images (any shape; flattened).
        false_alarm_rate: target share of good parts flagged on the line, in (0, 1).

    Returns:
        ``Threshold`` with ``value = s_(k)``, ``k = ceil((1 - far)(n + 1))`` (1-based,
        ascending, clamped to n); see the module docstring for the guarantee and tiny ``n``.

    Raises:
        ValueError: naming ``good_scores`` (empty, NaN or inf) or
            ``false_alarm_rate`` (not in (0, 1)).
    """
    far = _check_far(false_alarm_rate)
    scores = np.asarray(good_scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("good_scores is empty: need at least one held-out good image")
    if not np.all(np.isfinite(scores)):
        bad = int(np.sum(~np.isfinite(scores)))
        raise ValueError(f"good_scores contains {bad} NaN/inf value(s)")
    n = int(scores.size)
    k = conformal_rank(n, far)
    threshold = Threshold(
        value=float(np.partition(scores, k - 1)[k - 1]), false_alarm_rate=far, n_images=n
    )
    if not threshold.guarantee_holds:
        logger.warning(
            "calibrate_threshold: n=%d good images are too few for false_alarm_rate=%.4g "
            "(need n + 1 >= %.4g); threshold is the max good score and the guarantee does not "
            "hold",
            n,
            far,
            1.0 / far,
        )
    return threshold
