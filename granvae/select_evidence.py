"""Paired evidence for selection: candidates compared on the same images, not by their intervals.

Why: every candidate of a sweep is scored on the same held-out good images and the same test
defects, so the question "is B's recall really higher than A's?" has a paired answer: resample
the images once, recalibrate each candidate's threshold on the resampled good scores, and take
the percentile interval of the per-replicate difference. Image-to-image noise that two
separate intervals would double count cancels, so a clear difference shows as one.

Pure numpy; `load_scores` is the only file I/O (the per-candidate scores.npz and
threshold.json that granvae.evaluate writes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from granvae.metrics.bootstrap import (
    Interval,
    percentile_interval,
    replicate_recalls,
    resample_indices,
)

CANDIDATES_DIR = "candidates"  # granvae.sweep.CANDIDATES (not imported: that pulls in torch)
SCORES_NPZ = "scores.npz"  # granvae.evaluate.SCORES_FILE
THRESHOLD_JSON = "threshold.json"  # granvae.evaluate.THRESHOLD_FILE


@dataclass(frozen=True)
class EvalScores:
    """One candidate's per-image scores: good (calibration) and defect (test) images."""

    good: np.ndarray
    defect: np.ndarray
    false_alarm_rate: float

    def pairs_with(self, other: EvalScores) -> bool:
        """Same image counts and rate: the two were scored on one evaluation set."""
        return (
            self.good.size == other.good.size
            and self.defect.size == other.defect.size
            and self.false_alarm_rate == other.false_alarm_rate
        )


def _usable(scores: EvalScores | None) -> bool:
    return (
        scores is not None
        and scores.good.size > 0
        and scores.defect.size > 0
        and bool(np.all(np.isfinite(scores.good)) and np.all(np.isfinite(scores.defect)))
    )


def paired_differences(
    reference: str,
    others: list[str],
    scores: Mapping[str, EvalScores],
    n_boot: int,
    level: float,
) -> dict[str, Interval]:
    """recall(other) - recall(reference) with its paired percentile interval, for every other
    candidate whose scores pair with the reference's; one set of resampling indices for all,
    drawn from a fixed seed, so the answer does not depend on who else is in the sweep."""
    ref = scores.get(reference)
    if not _usable(ref):
        return {}
    assert ref is not None
    far = ref.false_alarm_rate
    gi, di = resample_indices(np.random.default_rng(0), n_boot, ref.good.size, ref.defect.size)
    ref_reps = replicate_recalls(ref.good, ref.defect, gi, di, far)
    ref_point = _point_recall(ref, far)
    out = {}
    for cid in others:
        other = scores.get(cid)
        if not _usable(other) or not other.pairs_with(ref):
            continue
        reps = replicate_recalls(other.good, other.defect, gi, di, far) - ref_reps
        lo, hi = percentile_interval(reps, level)
        out[cid] = Interval(_point_recall(other, far) - ref_point, lo, hi, level)
    return out


def _point_recall(s: EvalScores, far: float) -> float:
    """Recall at the conformal threshold of the full good set (the replicates' rule)."""
    whole = np.arange(s.good.size)[None, :]
    every = np.arange(s.defect.size)[None, :]
    return float(replicate_recalls(s.good, s.defect, whole, every, far)[0])


def load_scores(sweep_dir: Path | str, rows: list[dict[str, Any]]) -> dict[str, EvalScores]:
    """Per-image scores of every candidate that has them; candidates without are left out
    (selection then ties them only within the tolerance)."""
    out = {}
    for row in rows:
        cid = str(row.get("candidate_id"))
        cdir = Path(sweep_dir) / CANDIDATES_DIR / cid
        try:
            with np.load(cdir / SCORES_NPZ) as data:
                good, test, labels = data["val_score"], data["test_score"], data["test_labels"]
            far = float(json.loads((cdir / THRESHOLD_JSON).read_text())["false_alarm_rate"])
        except (OSError, KeyError, ValueError):
            continue
        if labels.shape != test.shape:
            continue
        out[cid] = EvalScores(
            np.asarray(good, np.float64), np.asarray(test[labels != 0], np.float64), far
        )
    return out
