"""The monitor's other tests on a window of inspections: each one a pure function with a p-value.

- score shift: the scores of recent passes against reference good scores below the threshold
  (two-sample Kolmogorov-Smirnov; a pass is a good part's score truncated at the threshold, so
  the reference is truncated the same way);
- invalid frames: the count of ``invalid`` verdicts against the expected rate (one-sided exact
  binomial);
- confirmed false alarms: operator-confirmed false alarms per inspected part against the
  calibrated false-alarm rate (one-sided exact binomial; unreviewed alarms are not counted, so
  the test can only under-state the rate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class TestResult:
    """One test's figures; ``fired`` when its p-value is below the level it was run at."""

    name: str
    statistic: float
    p_value: float
    fired: bool
    detail: dict[str, float | int]

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "statistic": self.statistic, "p_value": self.p_value,
                "fired": self.fired, **self.detail}  # fmt: skip


def score_shift(
    pass_scores: np.ndarray, reference_scores: np.ndarray, threshold: float, level: float = 1e-3
) -> TestResult:
    """KS test of recent pass scores against reference good scores at or below ``threshold``."""
    recent = np.asarray(pass_scores, dtype=np.float64)
    ref = np.asarray(reference_scores, dtype=np.float64)
    ref = ref[np.isfinite(ref) & (ref <= threshold)]
    recent = recent[np.isfinite(recent)]
    if recent.size < 2 or ref.size < 2:
        raise ValueError(
            f"score shift needs >= 2 scores on each side, got {recent.size}, {ref.size}"
        )
    res = stats.ks_2samp(recent, ref)
    detail = {"n_recent": int(recent.size), "n_reference": int(ref.size),
              "median_recent": float(np.median(recent)), "median_reference": float(np.median(ref))}
    return TestResult("score_shift", float(res.statistic), float(res.pvalue),
                      bool(res.pvalue < level), detail)  # fmt: skip


def _binomial_excess(name: str, k: int, n: int, rate: float, level: float) -> TestResult:
    if n < 1:
        raise ValueError(f"{name}: no inspections in the window")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{name}: expected rate must be in [0, 1), got {rate}")
    if rate == 0.0:
        p = 0.0 if k > 0 else 1.0
    else:
        p = float(stats.binomtest(k, n, rate, alternative="greater").pvalue)
    detail = {"count": int(k), "n": int(n), "rate": k / n, "expected_rate": rate}
    return TestResult(name, k / n, p, bool(p < level), detail)


def invalid_rate(n_invalid: int, n_inspected: int, expected_rate: float,
                 level: float = 1e-3) -> TestResult:  # fmt: skip
    """Are more frames ``invalid`` than the expected rate allows?"""
    return _binomial_excess("invalid_rate", n_invalid, n_inspected, expected_rate, level)


def confirmed_false_alarm_rate(n_false_alarms: int, n_inspected: int, calibrated_rate: float,
                               level: float = 1e-3) -> TestResult:  # fmt: skip
    """Do operator-confirmed false alarms alone exceed the calibrated false-alarm rate?"""
    return _binomial_excess(
        "confirmed_false_alarm_rate", n_false_alarms, n_inspected, calibrated_rate, level
    )
