"""Paired scores of two detectors with a known true recall difference, for simulating decisions.

Why a simulator: "refused if worse" is a claim about a decision rule's error rates, and those
are only measurable where the truth is known. The model is binormal (the textbook ROC
model): each image has a shared component u (how unusual the part itself is), seen by both
detectors, plus each detector's own noise, so the two detectors' scores on one image have
correlation ``rho``. Good scores are N(0, 1); a detector's defect scores are N(mu, 1) with mu
set so that its recall at the false-alarm rate ``far`` is exactly the requested one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

__all__ = ["PairedScores", "simulate_paired_scores"]

DEFAULT_RHO = 0.8
DEFAULT_RECALL = 0.7


@dataclass(frozen=True)
class PairedScores:
    """Scores of a challenger and a champion on the same good and defect images."""

    good_challenger: np.ndarray
    defect_challenger: np.ndarray
    good_champion: np.ndarray
    defect_champion: np.ndarray


def _shift(recall: float, far: float) -> float:
    """Defect mean that gives ``recall`` at the ``far`` quantile of N(0, 1) good scores."""
    if not 0.0 < recall < 1.0:
        raise ValueError(f"recall must be in (0, 1), got {recall!r}")
    return float(norm.ppf(1.0 - far) + norm.ppf(recall))


def _pair(rng: np.random.Generator, n: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
    shared = rng.standard_normal(n)
    own = rng.standard_normal((2, n))
    a, b = np.sqrt(rho) * shared + np.sqrt(1.0 - rho) * own
    return a, b


def simulate_paired_scores(
    rng: np.random.Generator,
    n_good: int,
    n_defect: int,
    difference: float,
    far: float = 0.01,
    recall_champion: float = DEFAULT_RECALL,
    rho: float = DEFAULT_RHO,
) -> PairedScores:
    """One evaluation set: the challenger's true recall is ``recall_champion + difference``."""
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho!r}")
    good_a, good_b = _pair(rng, n_good, rho)
    defect_a, defect_b = _pair(rng, n_defect, rho)
    return PairedScores(
        good_challenger=good_a,
        defect_challenger=defect_a + _shift(recall_champion + difference, far),
        good_champion=good_b,
        defect_champion=defect_b + _shift(recall_champion, far),
    )
