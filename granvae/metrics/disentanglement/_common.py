"""Shared helpers for the disentanglement metrics: the data-set interface,
the code sampler, histogram discretisation and discrete information terms.

Layout convention: every array here is (samples, columns) -- codes (N, D),
factors (N, F). disentanglement_lib stores the transpose, (columns, samples);
only the orientation differs, never the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from sklearn.metrics import mutual_info_score

Represent = Callable[[np.ndarray], np.ndarray]
"""Maps a batch of observations to codes (N, D), e.g. the encoder means."""


class FactorDatasetLike(Protocol):
    """The slice of disentanglement_lib's GroundTruthData that metrics need.

    Structural, so any data set with these members works (granvae's
    FactorDataset, or a tiny test double) without importing granvae.data.
    """

    @property
    def factor_sizes(self) -> Sequence[int]: ...

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray: ...


def sample_codes(
    represent: Represent,
    dataset: FactorDatasetLike,
    n: int,
    rng: np.random.Generator,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw n (codes, factors) pairs, calling ``represent`` in batches.

    Mirrors disentanglement_lib ``utils.generate_batch_factor_code`` (factors
    sampled uniformly by the data set, one batch at a time, so the encoder
    never sees more than ``batch_size`` observations at once), but returns
    (N, D) float64 codes and (N, F) int64 factors instead of the transposes.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got {n}, {batch_size}")
    codes, factors = [], []
    for start in range(0, n, batch_size):
        f = np.asarray(dataset.sample_factors(min(batch_size, n - start), rng))
        obs = dataset.sample_observations_from_factors(f, rng)
        codes.append(np.asarray(represent(obs), dtype=np.float64).reshape(len(f), -1))
        factors.append(f.astype(np.int64))
    return np.concatenate(codes), np.concatenate(factors)


def check_codes_factors(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes early: a transposed array would silently give garbage."""
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(
            f"expected codes (N, D) and factors (N, F), got {codes.shape} and {factors.shape}"
        )
    if not np.all(np.isfinite(codes)):
        raise ValueError("codes contain NaN or inf")
    return codes, factors


def histogram_discretize(codes: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """Per dimension, equal-width bins between that dimension's min and max.

    Same as disentanglement_lib ``_histogram_discretize``: the bin edges of
    ``np.histogram`` without the last one, then ``np.digitize``, so values
    land in 1..n_bins (the max falls in the last bin). A constant dimension
    becomes a single bin and so carries zero information.
    """
    out = np.zeros(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram(codes[:, d], n_bins)[1][:-1]
        out[:, d] = np.digitize(codes[:, d], edges)
    return out


def discrete_mutual_info(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(D, F) matrix of I(code_d; factor_f) in nats (sklearn mutual_info_score)."""
    n_codes, n_factors = discrete_codes.shape[1], factors.shape[1]
    mi = np.zeros((n_codes, n_factors))
    for d in range(n_codes):
        for f in range(n_factors):
            mi[d, f] = mutual_info_score(factors[:, f], discrete_codes[:, d])
    return mi


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """(F,) entropies H(factor_f) in nats, as I(f; f) like disentanglement_lib."""
    return np.array(
        [mutual_info_score(factors[:, f], factors[:, f]) for f in range(factors.shape[1])]
    )


def varying_factors(factors: np.ndarray) -> np.ndarray:
    """Boolean mask of factors that take at least two values in this sample.

    A constant factor (size 1, or unlucky sampling) has zero entropy and a
    single class, which breaks every normalisation and classifier; all our
    metrics drop such factors instead of returning NaN or raising.
    """
    return np.array([np.unique(factors[:, f]).size > 1 for f in range(factors.shape[1])])


def top_two_gap(matrix: np.ndarray) -> np.ndarray:
    """Per column, largest minus second-largest entry (0 second if one row)."""
    ordered = np.sort(matrix, axis=0)[::-1]
    second = ordered[1] if len(ordered) > 1 else np.zeros(matrix.shape[1])
    return ordered[0] - second
