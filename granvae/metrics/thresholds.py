"""Decision-threshold calibration on held-out good images.

The line runs ``defect iff score > threshold`` (strictly greater, everywhere:
here, in :mod:`granvae.metrics.inspection` and in the edge runtime). A plant
states its tolerance as a false-alarm rate, the share of good parts it accepts
to reject, so the threshold is set from good images alone: the model never
sees a defect during training, and labelled defects are too rare to tune on.

The rule is an empirical order statistic, chosen because it is exact on the
calibration set (no interpolation can push the observed rate above the
target) and distribution-free: with ``n`` good scores sorted ascending
``s_(1) <= ... <= s_(n)``, the threshold is ``s_(k)`` with
``k = ceil((1 - far) * n)``. At most ``n - k = floor(far * n)`` scores lie
strictly above it, so the observed rate on the calibration set is ``<= far``;
ties at ``s_(k)`` only lower it further, never raise it. On fresh good images
from the same distribution the expected rate is about ``(n - k + 1) / (n + 1)``,
i.e. ``far`` up to ``1 / n``.

When ``n < 1 / far`` no good image may be sacrificed (``floor(far * n) == 0``):
the threshold is the largest good score and the achievable rate on the
calibration set is 0. The target is then not really measured; calibrate on more
good images. This case is logged as a warning rather than raised, because tiny
calibration sets are legitimate in smoke tests and demos.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Threshold", "calibrate_threshold", "ORDER_STATISTIC"]

logger = logging.getLogger(__name__)

ORDER_STATISTIC = "order_statistic"
"""Method name recorded for :func:`calibrate_threshold` (see the module docstring)."""

# floor(far * n) is computed with a tiny tolerance so that e.g. far=0.07, n=100
# (0.07 * 100 == 7.000000000000001 or 6.999999999999999 in floating point)
# allows exactly 7 exceedances, as the real-number rule says.
_FLOOR_EPS = 1e-9


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

    def __post_init__(self) -> None:
        if not math.isfinite(float(self.value)):
            raise ValueError(f"value must be finite, got {self.value!r}")
        _check_far(self.false_alarm_rate)
        if int(self.n_images) < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_images!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the ``threshold`` block of the bundle manifest)."""
        return asdict(self)

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
    """Choose the threshold so that at most ``false_alarm_rate`` of good scores exceed it.

    Args:
        good_scores: anomaly scores of held-out good images (any shape; flattened).
        false_alarm_rate: target share of good images flagged, in (0, 1).

    Returns:
        ``Threshold`` with ``value = s_(k)``, ``k = ceil((1 - far) * n)`` (1-based,
        ascending); see the module docstring for ties and tiny ``n``.

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
    allowed = int(math.floor(far * n + _FLOOR_EPS))  # n - k, exceedances permitted
    if allowed == 0:
        logger.warning(
            "calibrate_threshold: n=%d < 1/false_alarm_rate=%.4g; threshold is the max "
            "good score and the achievable false-alarm rate on these images is 0",
            n,
            1.0 / far,
        )
    value = float(np.partition(scores, n - 1 - allowed)[n - 1 - allowed])
    return Threshold(value=value, false_alarm_rate=far, n_images=n, method=ORDER_STATISTIC)
