"""MWS and MSS against exact values on a set small enough to sum q(z) over all N.

The set (granvae.metrics.exact_terms.correlated_set) has N = 256 narrow
posteriors in 4 dimensions, groups {0,1} and {2,3}: the regime where the
sample's own posterior dominates a minibatch sum and weights matter most.
Three kinds of check, each with a tolerance of Z standard errors measured
from the batches themselves (the draws are seeded, so the suite is
deterministic; Z = 4 leaves room for a change of seed):

- density: with uniform random batches E[q_hat(z_i)] is known exactly, q(z_i)
  for MSS and a closed form for MWS, at every B;
- whole set: B = N makes MWS exact for every term and every sample;
- terms at several B: MSS is closer to the exact MI and TC_between than MWS,
  both errors shrink as B grows, and MWS caps MI at log B.

The mutation tests inject the weight bugs named in issue 10 (the reference
code's column-0 stride, uniform 1/B in MSS, Chen's 1/(NB) in MWS) and assert
that these checks reject each one.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch

from granvae import objectives
from granvae.metrics.exact_terms import (
    TERMS,
    correlated_set,
    draw_estimates,
    exact_log_densities,
    exact_terms,
    expected_ratio,
)

N, GROUPS, Z = 256, [[0, 1], [2, 3]], 4.0
SET = correlated_set(N, posterior_std=0.25, seed=0)
BATCHES = (16, 64, 128)
REAL_WEIGHTS = objectives.log_importance_weights


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """B x B x 4 matrices are tiny: threads only fight over the shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def density_failures(estimator: str, batch: int, n_batches: int) -> list[str]:
    """Where the mean of q_hat(z_i) / q(z_i) misses its exact expectation by > Z SE."""
    d = draw_estimates(SET, GROUPS, batch, estimator, n_batches, seed=batch)
    gap = (d.ratio - expected_ratio(d.own, batch, N, estimator)).reshape(n_batches, batch)
    per_batch = gap.mean(1)
    se = per_batch.std(ddof=1) / math.sqrt(n_batches)
    off = per_batch.mean()
    if abs(off) > Z * se + 1e-12:
        return [f"{estimator} B={batch}: density ratio off by {off:+.4f} (SE {se:.4f})"]
    return []


def whole_set_failures() -> list[str]:
    """MWS over the whole set (shuffled) must reproduce every exact per-sample density."""
    perm = np.random.default_rng(1).permutation(N)
    t = [torch.from_numpy(a[perm]) for a in (SET.z, SET.mu, SET.logvar)]
    dens = objectives.aggregate_log_densities(*t, GROUPS, N, "mws")
    exact = exact_log_densities(SET, GROUPS)
    return [
        f"mws B=N: {k} differs by {np.abs(dens[k].numpy() - exact[k][perm]).max():.3g}"
        for k in ("log_qz", "log_qz_groups", "log_qz_dims", "log_qz_x", "log_pz")
        if not np.allclose(dens[k].numpy(), exact[k][perm], rtol=0, atol=1e-9)
    ]


def all_failures(n_batches: int) -> list[str]:
    out = whole_set_failures()
    for estimator in ("mws", "mss"):
        for batch in (16, 64):
            out += density_failures(estimator, batch, n_batches)
    return out


@cache
def term_stats(estimator: str, batch: int) -> dict[str, tuple[float, float]]:
    """(bias vs exact, standard error) of each term's batch mean, 300 uniform batches."""
    d = draw_estimates(SET, GROUPS, batch, estimator, 300, seed=batch)
    exact = exact_terms(SET, GROUPS)
    return {
        k: (float(v.mean() - exact[k]), float(v.std(ddof=1) / math.sqrt(len(v))))
        for k, v in d.terms.items()
    }


@pytest.mark.parametrize("batch", [2, 5, 64])
def test_mss_weights_rows_sum_to_one_with_1_over_n_on_the_diagonal(batch: int) -> None:
    n, m = 1000, batch - 1
    w = objectives.log_importance_weights(batch, n, "mss", torch.zeros(1, dtype=torch.float64))
    w = w.exp()
    torch.testing.assert_close(w.sum(1), torch.ones(batch, dtype=torch.float64))
    torch.testing.assert_close(w.diagonal(), torch.full((batch,), 1 / n, dtype=torch.float64))
    strat = (n - m) / (n * m)
    for i in range(batch):
        assert w[i, (i - 1) % batch] == pytest.approx(strat)
        others = [j for j in range(batch) if j not in (i, (i - 1) % batch)]
        assert torch.allclose(w[i, others], torch.tensor(1 / m, dtype=torch.float64))
    mws = objectives.log_importance_weights(batch, n, "mws", w).exp()
    torch.testing.assert_close(mws, torch.full_like(mws, 1 / batch))


def test_bad_estimator_inputs_fail_with_a_clear_error() -> None:
    like = torch.zeros(1)
    with pytest.raises(ValueError, match="estimator must be 'mws' or 'mss'"):
        objectives.log_importance_weights(4, 100, "msw", like)
    with pytest.raises(ValueError, match="dataset_size >= batch"):
        objectives.log_importance_weights(8, 4, "mss", like)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_density_estimate_has_its_exact_expectation(estimator: str, batch: int) -> None:
    assert density_failures(estimator, batch, 300) == []


def test_mws_over_the_whole_set_is_exact_for_every_term() -> None:
    assert whole_set_failures() == []
    terms = draw_estimates(SET, GROUPS, N, "mws", n_batches=2).terms
    exact = exact_terms(SET, GROUPS)
    for term in TERMS:
        np.testing.assert_allclose(terms[term], exact[term], rtol=0, atol=1e-9, err_msg=term)


def test_exact_log_densities_sum_over_every_posterior() -> None:
    """objectives.exact_log_densities (held-out evaluation's default) in chunks = numpy/scipy."""
    t = [torch.from_numpy(a) for a in (SET.z, SET.mu, SET.logvar)]
    dens = objectives.exact_log_densities(*t, GROUPS, chunk=100)
    exact = exact_log_densities(SET, GROUPS)
    for key, value in exact.items():
        np.testing.assert_allclose(dens[key].numpy(), value, rtol=0, atol=1e-9, err_msg=key)
    terms = objectives.decomposition_from_densities(dens)
    assert {k: float(v) for k, v in terms.items()} == pytest.approx(exact_terms(SET, GROUPS))


@pytest.mark.parametrize("batch", BATCHES)
def test_mss_is_closer_to_the_exact_terms_than_mws(batch: int) -> None:
    mws, mss = term_stats("mws", batch), term_stats("mss", batch)
    for term in ("mi", "tc_between", "tc"):
        margin = Z * (mws[term][1] + mss[term][1])
        assert abs(mss[term][0]) + margin < abs(mws[term][0]), (term, mss[term], mws[term])
    # MWS gives the sample's own posterior 1/B instead of 1/N: MI is under-estimated.
    assert mws["mi"][0] < -Z * mws["mi"][1]
    exact_mi = exact_terms(SET, GROUPS)["mi"]
    assert exact_mi + mws["mi"][0] <= math.log(batch) + Z * mws["mi"][1]


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_errors_shrink_as_the_batch_grows(estimator: str) -> None:
    stats = [term_stats(estimator, b) for b in BATCHES]
    for term in TERMS:
        errs = [abs(s[term][0]) for s in stats]
        ses = [s[term][1] for s in stats]
        assert errs[-1] + Z * (ses[-1] + ses[0]) < errs[0], (estimator, term, errs)
    # At B = N / 2, MSS is within 0.1 nats of every exact term on this set.
    assert estimator == "mws" or all(abs(stats[-1][t][0]) < 0.1 for t in TERMS)


def _column_zero(batch, dataset_size, estimator, like):
    """The beta-TCVAE reference code: a stride of B puts the 1/N weights in column 0."""
    if estimator != "mss":
        return REAL_WEIGHTS(batch, dataset_size, estimator, like)
    n, m = dataset_size, batch - 1
    w = torch.full((batch, batch), 1.0 / m, dtype=like.dtype)
    flat = w.view(-1)
    flat[:: m + 1] = 1.0 / n
    flat[1 :: m + 1] = (n - m) / (n * m)
    w[m - 1, 0] = (n - m) / (n * m)
    return w.log()


def _uniform_mss(batch, dataset_size, estimator, like):
    return REAL_WEIGHTS(batch, dataset_size, "mws", like)


def _chen_mws(batch, dataset_size, estimator, like):
    """Chen et al.'s 1/(N B): right gradients, log q(z_S) shifted by -log N."""
    w = REAL_WEIGHTS(batch, dataset_size, estimator, like)
    return w - math.log(dataset_size) if estimator == "mws" else w


def test_the_checks_pass_with_the_real_weights() -> None:
    assert all_failures(n_batches=150) == []


@pytest.mark.parametrize(
    ("mutant", "broken"),
    [(_column_zero, "mss"), (_uniform_mss, "mss"), (_chen_mws, "mws")],
    ids=["column-0 stride", "uniform 1/B in mss", "chen 1/(NB) in mws"],
)
def test_the_checks_reject_each_known_weight_bug(monkeypatch, mutant, broken: str) -> None:
    monkeypatch.setattr(objectives, "log_importance_weights", mutant)
    failures = all_failures(n_batches=150)
    assert failures, f"{mutant.__name__} passed every exactness check"
    assert all(f.startswith(broken) for f in failures), failures
