"""Per-line choice of a score rule (and tile size) from synthetic defects: a pure function
of scores.

Each candidate (a score rule, a tile size, a rule on a tile size: any name) has been run on
the line's held-out good images and on the same kind of images carrying synthetic defects
(granvae.data.synthetic_defects). For each candidate the threshold is set on the good
scores at the false-alarm rate (the same order statistic the line will use,
granvae.metrics.thresholds), and its recall is measured per synthetic class; the estimate
is the mean over classes, so a class with many images cannot outvote the others. Where real
labelled defects exist too, their recall is reported beside it: the gap is how far the
estimate can be trusted on this line.

The candidate with the best estimate wins; ties go to the higher AUROC of synthetic
defects against good images, then to the first candidate given. No torch, no mlflow:
``choose_rule`` is called by whatever scored the candidates, and ``selection_columns``
turns a candidate's estimate into columns a selection policy (granvae.select) can gate or
rank on (e.g. ``synthetic_recall_at_far``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from granvae.metrics.inspection import image_auroc
from granvae.metrics.thresholds import calibrate_threshold


@dataclass(frozen=True)
class CandidateScores:
    """One candidate's scores: held-out good images, synthetic defects per class, and real
    defects where the line has any."""

    good: np.ndarray
    synthetic: Mapping[str, np.ndarray]
    real: np.ndarray | None = None


@dataclass(frozen=True)
class RuleEstimate:
    name: str
    threshold: float
    synthetic_recall: float  # mean over classes
    per_class: dict[str, float] = field(default_factory=dict)
    synthetic_auroc: float = float("nan")
    real_recall: float | None = None

    @property
    def gap(self) -> float | None:
        """synthetic - real recall (positive: the estimate is optimistic)."""
        return None if self.real_recall is None else self.synthetic_recall - self.real_recall


@dataclass(frozen=True)
class Choice:
    best: str
    estimates: tuple[RuleEstimate, ...]  # best first

    def estimate(self, name: str) -> RuleEstimate:
        return next(e for e in self.estimates if e.name == name)


def estimate_rule(name: str, scores: CandidateScores, false_alarm_rate: float) -> RuleEstimate:
    """Threshold on the good scores, recall per synthetic class, and on real defects."""
    good = np.asarray(scores.good, np.float64)
    if not scores.synthetic:
        raise ValueError(f"candidate {name!r} has no synthetic defect scores")
    threshold = calibrate_threshold(good, false_alarm_rate).value
    per_class = {kind: float(np.mean(np.asarray(s, np.float64) > threshold))
                 for kind, s in scores.synthetic.items() if len(s)}  # fmt: skip
    if not per_class:
        raise ValueError(f"candidate {name!r}: every synthetic class is empty")
    pooled = np.concatenate([np.asarray(s, np.float64) for s in scores.synthetic.values()])
    labels = np.concatenate([np.zeros(len(good)), np.ones(len(pooled))])
    real = None
    if scores.real is not None and len(scores.real):
        real = float(np.mean(np.asarray(scores.real, np.float64) > threshold))
    return RuleEstimate(
        name=name, threshold=float(threshold),
        synthetic_recall=float(np.mean(list(per_class.values()))), per_class=per_class,
        synthetic_auroc=float(image_auroc(np.concatenate([good, pooled]), labels)),
        real_recall=real,
    )  # fmt: skip


def choose_rule(
    candidates: Mapping[str, CandidateScores], false_alarm_rate: float = 0.01
) -> Choice:
    """The candidate with the best synthetic-defect recall at ``false_alarm_rate``."""
    if not candidates:
        raise ValueError("choose_rule needs at least one candidate")
    estimates = [estimate_rule(n, s, false_alarm_rate) for n, s in candidates.items()]
    order = {e.name: i for i, e in enumerate(estimates)}

    def key(e: RuleEstimate) -> tuple[float, float, int]:
        auroc = e.synthetic_auroc if np.isfinite(e.synthetic_auroc) else -np.inf
        return (-e.synthetic_recall, -auroc, order[e.name])

    ranked = tuple(sorted(estimates, key=key))
    return Choice(best=ranked[0].name, estimates=ranked)


def selection_columns(estimate: RuleEstimate) -> dict[str, Any]:
    """Columns for a sweep row, so a selection policy can gate or rank on the estimate."""
    cols: dict[str, Any] = {
        "synthetic_recall_at_far": estimate.synthetic_recall,
        "synthetic_auroc": estimate.synthetic_auroc,
    }
    cols.update({f"synthetic_recall_{k}": v for k, v in estimate.per_class.items()})
    if estimate.real_recall is not None:
        cols["synthetic_gap"] = estimate.gap
    return cols
