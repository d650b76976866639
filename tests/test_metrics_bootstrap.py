"""Bootstrap intervals of recall at a calibrated false-alarm rate, against hand-computed cases."""

import numpy as np
import pytest
from scipy import stats

from granvae.metrics.bootstrap import (
    paired_recall_difference,
    recall_interval,
    thresholds_from_resamples,
)
from granvae.metrics.thresholds import calibrate_threshold


def test_fixed_threshold_interval_is_the_binomial_one():
    """All good scores equal: every replicate's threshold is 0, so the replicates are exactly
    Binomial(n, k/n) / n and the percentile interval is its 2.5% and 97.5% quantiles."""
    n, k = 100, 37
    defect = np.r_[np.ones(k), -np.ones(n - k)]
    iv = recall_interval(np.zeros(50), defect, 0.01, n_boot=20000, rng=np.random.default_rng(1))
    lo, hi = stats.binom.ppf([0.025, 0.975], n, k / n) / n
    assert iv.estimate == pytest.approx(k / n)
    assert iv.low == pytest.approx(lo, abs=1.01 / n)
    assert iv.high == pytest.approx(hi, abs=1.01 / n)
    assert iv.high - iv.low > 0.1  # a dropped resampling of the defects would give width 0


def test_threshold_is_recalibrated_in_every_replicate():
    """Good scores 0..199 at 1%: the conformal rank ceil(0.99 * 201) = 199, index 198 of the
    sorted resample."""
    good = np.arange(200.0)
    idx = np.array([np.arange(200), np.r_[np.zeros(100, int), np.full(100, 199)]])
    thr = thresholds_from_resamples(good, idx, 0.01)
    assert thr.tolist() == [198.0, 199.0]
    assert calibrate_threshold(good, 0.01).value == thr[0]


def test_threshold_noise_widens_the_interval():
    """Same defects, a threshold that moves between replicates -> a wider interval than a
    fixed threshold gives."""
    rng = np.random.default_rng(0)
    defect = rng.normal(2.0, 1.0, 200)
    fixed = recall_interval(np.zeros(300), defect, 0.01, rng=np.random.default_rng(2))
    noisy = recall_interval(rng.normal(0, 1, 300), defect, 0.01, rng=np.random.default_rng(2))
    assert noisy.high - noisy.low > 1.5 * (fixed.high - fixed.low)


def test_separated_scores_give_a_certain_recall():
    iv = recall_interval(np.arange(100.0), np.arange(200.0, 240.0), 0.05)
    assert (iv.estimate, iv.low, iv.high) == (1.0, 1.0, 1.0)


def test_paired_difference_of_a_detector_with_itself_is_zero_and_sign_is_right():
    rng = np.random.default_rng(3)
    good, defect = rng.normal(0, 1, 256), rng.normal(2.5, 1, 128)
    same = paired_recall_difference(good, defect, good, defect, 0.01)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    worse = paired_recall_difference(good, defect - 1.0, good, defect, 0.01)
    assert worse.high < 0 < -worse.low


def test_paired_difference_refuses_unpaired_sets():
    with pytest.raises(ValueError, match="same images"):
        paired_recall_difference(np.zeros(5), np.ones(3), np.zeros(6), np.ones(3), 0.1)
