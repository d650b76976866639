"""The promotion decision: is the challenger *not worse* than the champion by more than a margin?

Why non-inferiority and not "refuse when the whole interval is below zero": that rule puts
the burden of proof on the refusal, so a noisy evaluation lets worse models through (at 256
good / 128 defect images a challenger 11 points worse was refused 17 times in 100). Here the
burden is on the challenger: it is promoted only when the paired one-sided lower confidence
bound of recall(challenger) - recall(champion) lies above -margin. An equal challenger must
then be measured precisely enough to clear the margin, which is why the evaluation sizes
and the margin are chosen together (benchmarks/decisions.py prints the power table).

Paired: both models are scored on the same good and defect images and every bootstrap
replicate resamples the same rows for both; the threshold is recalibrated on the resampled
good scores in every replicate (the threshold's own noise belongs in the interval).

Pure: a function of per-image scores, so it can be simulated; no mlflow, no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from granvae.metrics.bootstrap import paired_recall_difference

__all__ = ["DEFAULT_CONFIDENCE", "DEFAULT_MARGIN", "NonInferiority", "non_inferiority"]

DEFAULT_MARGIN = 0.05
DEFAULT_CONFIDENCE = 0.95  # one-sided: the lower bound of the two-sided 90% interval
DEFAULT_BOOT = 1000


@dataclass(frozen=True)
class NonInferiority:
    """recall(challenger) - recall(champion) with its one-sided lower bound, and the verdict."""

    difference: float
    lower: float
    upper: float
    margin: float
    confidence: float
    n_good: int
    n_defect: int

    @property
    def refused(self) -> bool:
        """Refused unless the lower bound clears -margin (the data show 'not worse by more')."""
        return not self.lower > -self.margin

    def describe(self) -> str:
        verdict = "REFUSED" if self.refused else "accepted"
        return (
            f"non-inferiority {verdict}: difference {self.difference:+.3f}, one-sided "
            f"{self.confidence:.0%} lower bound {self.lower:+.3f} vs margin -{self.margin:g} "
            f"({self.n_good} good, {self.n_defect} defect images, paired)"
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "refused": self.refused}


def non_inferiority(
    good_challenger: np.ndarray,
    defect_challenger: np.ndarray,
    good_champion: np.ndarray,
    defect_champion: np.ndarray,
    false_alarm_rate: float,
    margin: float = DEFAULT_MARGIN,
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOT,
    rng: np.random.Generator | None = None,
) -> NonInferiority:
    """The promotion verdict from per-image scores of both models on the same images."""
    if not margin >= 0.0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")
    two_sided = 2.0 * confidence - 1.0
    diff = paired_recall_difference(
        good_challenger, defect_challenger, good_champion, defect_champion,
        false_alarm_rate, n_boot=n_boot, level=max(two_sided, 1e-6), rng=rng,
    )  # fmt: skip
    return NonInferiority(
        difference=diff.estimate,
        lower=diff.low,
        upper=diff.high,
        margin=float(margin),
        confidence=float(confidence),
        n_good=int(np.size(good_challenger)),
        n_defect=int(np.size(defect_challenger)),
    )
