"""Exact KL-decomposition terms of a finite set of Gaussian posteriors, and a set to test on.

The minibatch estimators in :mod:`granvae.objectives` (MWS, MSS) approximate
log q(z_S) = log (1/N) sum_n q(z_S | x_n) from B of the N posteriors. When N
is small enough (a few thousand), the sum over all N is affordable, and the
terms are then exact for the given samples: this is the reference the
estimator tests and ``benchmarks/estimators.py`` measure bias and variance
against. It is written in numpy/scipy on purpose, independently of the torch
code it checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import logsumexp
from scipy.stats import norm

from granvae.objectives import aggregate_log_densities

TERMS = ("mi", "tc", "tc_between", "group_kl")


@dataclass(frozen=True)
class PosteriorSet:
    """N diagonal Gaussian posteriors q(z|x_n) = N(mu_n, exp(logvar_n)) and one z_n from each."""

    mu: np.ndarray  # (N, D)
    logvar: np.ndarray  # (N, D)
    z: np.ndarray  # (N, D)

    @property
    def size(self) -> int:
        return len(self.mu)


def correlated_set(
    n: int, spread: float = 1.0, posterior_std: float = 0.25, seed: int = 0
) -> PosteriorSet:
    """A 4-d set whose aggregate posterior has within- and between-group dependence.

    Means come from a Gaussian with correlation 0.7 inside groups {0,1} and
    {2,3} and 0.2 across them, scaled by `spread`; each posterior has its own
    std around `posterior_std` (x0.5..x2), so log-variances are exercised too.
    Narrow posteriors (posterior_std << spread / N^(1/4)) are the regime where
    MWS is biased: the sample's own posterior dominates its 1/B-weighted sum.
    """
    corr = np.array(
        [[1, 0.7, 0.2, 0.2], [0.7, 1, 0.2, 0.2], [0.2, 0.2, 1, 0.7], [0.2, 0.2, 0.7, 1]]
    )
    rng = np.random.default_rng(seed)
    mu = spread * rng.standard_normal((n, 4)) @ np.linalg.cholesky(corr).T
    std = posterior_std * np.exp(rng.uniform(np.log(0.5), np.log(2.0), size=(n, 4)))
    z = mu + std * rng.standard_normal((n, 4))
    return PosteriorSet(mu, 2.0 * np.log(std), z)


def exact_log_densities(s: PosteriorSet, groups: list[list[int]]) -> dict[str, np.ndarray]:
    """Per-sample log q(z), sum_k log q(z_Gk), sum_d log q(z_d), log q(z|x), log p(z).

    The keys of objectives.aggregate_log_densities, but every q(z_S) summed over all N.
    """
    mat = norm.logpdf(s.z[:, None, :], s.mu[None], np.exp(0.5 * s.logvar)[None])  # (N, N, D)
    log_n = np.log(s.size)
    joint = logsumexp(mat.sum(2), axis=1) - log_n
    by_group = sum(logsumexp(mat[:, :, g].sum(2), axis=1) - log_n for g in groups)
    by_dim = (logsumexp(mat, axis=1) - log_n).sum(1)
    return {
        "log_qz": joint,
        "log_qz_groups": by_group,
        "log_qz_dims": by_dim,
        "log_qz_x": np.einsum("iid->i", mat),
        "log_pz": norm.logpdf(s.z).sum(1),
    }


def terms_from_densities(d: dict[str, np.ndarray]) -> dict[str, float]:
    """mi, tc, tc_between, group_kl as means over samples, exactly as compute_terms forms them."""
    return {
        "mi": float(np.mean(d["log_qz_x"] - d["log_qz"])),
        "tc": float(np.mean(d["log_qz"] - d["log_qz_dims"])),
        "tc_between": float(np.mean(d["log_qz"] - d["log_qz_groups"])),
        "group_kl": float(np.mean(d["log_qz_groups"] - d["log_pz"])),
    }


def exact_terms(s: PosteriorSet, groups: list[list[int]]) -> dict[str, float]:
    """Exact mi, tc, tc_between, group_kl of the set (means over its N samples)."""
    return terms_from_densities(exact_log_densities(s, groups))


@dataclass
class EstimatorDraws:
    """What `draw_estimates` saw: per-batch term means and per-sample density ratios."""

    terms: dict[str, np.ndarray]  # term -> (n_batches,) batch means
    ratio: np.ndarray  # q_hat(z_i) / q(z_i) for every row of every batch
    own: np.ndarray  # q(z_i | x_i) / (N q(z_i)) for the same rows: how much i explains itself


def draw_estimates(
    s: PosteriorSet,
    groups: list[list[int]],
    batch: int,
    estimator: str,
    n_batches: int,
    seed: int = 0,
    exact: dict[str, np.ndarray] | None = None,
) -> EstimatorDraws:
    """Run the torch estimator on `n_batches` uniform random batches (without replacement).

    Uniform batches are what the MSS weights assume: then E[q_hat(z_i)] =
    q(z_i) for MSS, and (q(z_i|x_i) + (B - 1) qbar_-i) / B for MWS, where
    qbar_-i is the mean of the other N - 1 posteriors at z_i. `exact` is
    exact_log_densities(s, groups), computed here when not given.
    """
    exact = exact if exact is not None else exact_log_densities(s, groups)
    rng = np.random.default_rng(seed)
    t = {k: torch.from_numpy(v) for k, v in (("z", s.z), ("mu", s.mu), ("lv", s.logvar))}
    terms: dict[str, list[float]] = {k: [] for k in TERMS}
    ratio, own = [], []
    for _ in range(n_batches):
        idx = rng.choice(s.size, size=batch, replace=False)
        dens = aggregate_log_densities(
            t["z"][idx], t["mu"][idx], t["lv"][idx], groups, s.size, estimator
        )
        d = {k: v.numpy() for k, v in dens.items()}
        for name, value in terms_from_densities(d).items():
            terms[name].append(value)
        ratio.append(np.exp(d["log_qz"] - exact["log_qz"][idx]))
        own.append(np.exp(exact["log_qz_x"][idx] - exact["log_qz"][idx] - np.log(s.size)))
    return EstimatorDraws(
        {k: np.asarray(v) for k, v in terms.items()}, np.concatenate(ratio), np.concatenate(own)
    )


def expected_ratio(own: np.ndarray, batch: int, n: int, estimator: str) -> np.ndarray:
    """E[q_hat(z_i) / q(z_i)] per row under uniform batches, from own = q(z_i|x_i) / (N q(z_i)).

    MSS is unbiased in density: 1. MWS gives the own posterior 1/B instead of
    1/N: (N own + (B - 1)(N - N own) / (N - 1)) / B.
    """
    if estimator == "mss":
        return np.ones_like(own)
    return (n * own + (batch - 1) * n * (1.0 - own) / (n - 1)) / batch
