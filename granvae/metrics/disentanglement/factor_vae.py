"""FactorVAE score (Kim & Mnih 2018, "Disentangling by Factorising"),
following disentanglement_lib ``metrics/factor_vae.py`` with the settings of
its ``unsupervised_study_v1`` config (batch 64, 10000 train votes, 5000 eval
votes, 10000 points for the global variance, prune threshold 0.05).
"""

from __future__ import annotations

import numpy as np

from granvae.metrics.disentanglement._common import FactorDatasetLike, Represent, sample_codes


def _fixed_factor_batches(
    dataset: FactorDatasetLike,
    candidates: np.ndarray,
    n_votes: int,
    batch_size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """For each vote pick a factor, draw ``batch_size`` factor rows and set
    that factor to the first row's value; returns (fixed index per vote,
    observations of all votes stacked vote by vote)."""
    fixed = candidates[rng.integers(len(candidates), size=n_votes)]
    factors = np.asarray(dataset.sample_factors(n_votes * batch_size, rng)).copy()
    factors = factors.reshape(n_votes, batch_size, -1)
    factors[np.arange(n_votes), :, fixed] = factors[np.arange(n_votes), 0, fixed][:, None]
    obs = dataset.sample_observations_from_factors(factors.reshape(n_votes * batch_size, -1), rng)
    return fixed, obs


def _votes(
    represent: Represent,
    dataset: FactorDatasetLike,
    n_votes: int,
    batch_size: int,
    rng: np.random.Generator,
    scale: np.ndarray,
    active: np.ndarray,
    represent_batch: int,
) -> np.ndarray:
    """(F, D) counts of (fixed factor, code dim with least normalised variance)."""
    candidates = np.flatnonzero(np.asarray(dataset.factor_sizes) > 1)
    votes = np.zeros((len(dataset.factor_sizes), len(scale)), dtype=np.int64)
    per_call = max(1, represent_batch // batch_size)
    for start in range(0, n_votes, per_call):
        n = min(per_call, n_votes - start)
        fixed, obs = _fixed_factor_batches(dataset, candidates, n, batch_size, rng)
        codes = np.asarray(represent(obs), dtype=np.float64).reshape(n, batch_size, -1)
        local = np.var(codes[:, :, active], axis=1, ddof=1) / scale[active]
        np.add.at(votes, (fixed, active[np.argmin(local, axis=1)]), 1)
    return votes


def _accuracy(votes: np.ndarray, classifier: np.ndarray) -> float:
    """Share of votes whose factor is the one the majority classifier names."""
    total = votes.sum()
    return float(votes[classifier, np.arange(votes.shape[1])].sum() / total) if total else 0.0


def compute_factor_vae(
    represent: Represent,
    dataset: FactorDatasetLike,
    rng: np.random.Generator,
    batch_size: int = 64,
    n_train: int = 10000,
    n_eval: int = 5000,
    n_var_est: int = 10000,
    prune_threshold: float = 0.05,
    represent_batch: int = 1024,
) -> dict[str, float]:
    """FactorVAE score: accuracy of a majority-vote classifier that names the
    fixed factor from the code dimension of least normalised variance.

    Matched conventions (disentanglement_lib ``compute_factor_vae``):
      - global variance per code dim from ``n_var_est`` random points (ddof=1);
        dims with std < ``prune_threshold`` are inactive (collapsed), and so
        are zero-variance dims even at threshold 0 (no division by zero);
      - one vote: draw a factor uniformly, sample ``batch_size`` points with it
        fixed, vote (factor, argmin over active dims of local var / global
        var), i.e. codes normalised by their global std;
      - classifier = per code dim argmax over factors of the train votes;
        accuracies = share of votes it gets right, on train and eval votes.
    Deviations:
      - only factors of size > 1 are ever fixed (fixing a constant factor
        fixes nothing, its votes are noise); chance level is 1/#varying;
      - the argmin over active dims is mapped back to the full dim index
        (disentanglement_lib indexes votes with the active-subset index,
        wrong whenever a dim was pruned);
      - several votes' batches go to ``represent`` in one call of at most
        ``represent_batch`` observations (same numbers, fewer calls);
      - ``rng`` is a ``numpy.random.Generator``, not a ``RandomState``.

    Returns:
        dict with factor_vae_train_accuracy, factor_vae_eval_accuracy and
        factor_vae_num_active_dims; accuracies are 0 when no dim is active
        or no factor varies.
    """
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2 to estimate a variance")
    codes, _ = sample_codes(represent, dataset, n_var_est, rng, represent_batch)
    scale = np.var(codes, axis=0, ddof=1)
    active = np.flatnonzero((np.sqrt(scale) >= prune_threshold) & (scale > 0))
    result = {"factor_vae_train_accuracy": 0.0, "factor_vae_eval_accuracy": 0.0}
    result["factor_vae_num_active_dims"] = float(len(active))
    if len(active) == 0 or not any(size > 1 for size in dataset.factor_sizes):
        return result
    args = (batch_size, rng, scale, active, represent_batch)
    train_votes = _votes(represent, dataset, n_train, *args)
    classifier = np.argmax(train_votes, axis=0)
    result["factor_vae_train_accuracy"] = _accuracy(train_votes, classifier)
    eval_votes = _votes(represent, dataset, n_eval, *args)
    result["factor_vae_eval_accuracy"] = _accuracy(eval_votes, classifier)
    return result
