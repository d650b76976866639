"""Disentanglement metrics for data with known ground-truth factors.

Pure functions on arrays, each ``compute_*(codes, factors, ...) -> dict[str,
float]`` with codes (N, D) float and factors (N, F) int, plus the FactorVAE
score (which needs a sampler, so it takes ``represent`` and a data set), the
thin sampler ``sample_codes`` and ``evaluate_all``. Semantics follow
google-research/disentanglement_lib (evaluation/metrics/{mig,dci,sap_score,
factor_vae,utils}.py); every function's docstring lists the conventions it
matches and where it deviates. Constant factors are skipped everywhere.
"""

from __future__ import annotations

import numpy as np

from granvae.metrics.disentanglement._common import (
    FactorDatasetLike,
    Represent,
    discrete_entropy,
    discrete_mutual_info,
    histogram_discretize,
    sample_codes,
)
from granvae.metrics.disentanglement.dci import (
    compute_dci,
    dci_completeness,
    dci_disentanglement,
    gbt_importance,
)
from granvae.metrics.disentanglement.factor_vae import compute_factor_vae
from granvae.metrics.disentanglement.mig import compute_mig
from granvae.metrics.disentanglement.sap import compute_sap, sap_score_matrix

__all__ = [
    "FactorDatasetLike",
    "Represent",
    "compute_dci",
    "compute_factor_vae",
    "compute_mig",
    "compute_sap",
    "dci_completeness",
    "dci_disentanglement",
    "discrete_entropy",
    "discrete_mutual_info",
    "evaluate_all",
    "gbt_importance",
    "histogram_discretize",
    "sample_codes",
    "sap_score_matrix",
]


def evaluate_all(
    represent: Represent,
    dataset: FactorDatasetLike,
    rng: np.random.Generator,
    n_train: int = 10000,
    n_test: int = 5000,
    *,
    batch_size: int = 64,
    n_bins: int = 20,
    n_estimators: int = 100,
    factor_vae_votes: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Every metric on one train/test sample of the data set.

    Defaults are disentanglement_lib's unsupervised_study_v1 sizes (10000
    train / 5000 test points; FactorVAE 10000 / 5000 votes of 64 points, 10000
    points for its variances). Deviation: disentanglement_lib draws a fresh
    sample per metric; here MIG (train split), DCI and SAP share one, which is
    cheaper and makes the metrics comparable on the same points.

    ``factor_vae_votes`` = (train, eval) vote counts, default (n_train,
    n_test); each vote costs ``batch_size`` encoder evaluations, so on a CPU
    pass something smaller.

    Returns:
        mig, dci_disentanglement, dci_completeness, dci_informativeness_test,
        sap, factor_vae_accuracy (the eval accuracy), all in [0, 1].
    """
    codes_train, factors_train = sample_codes(represent, dataset, n_train, rng, batch_size)
    codes_test, factors_test = sample_codes(represent, dataset, n_test, rng, batch_size)
    split = (codes_train, factors_train, codes_test, factors_test)
    dci = compute_dci(*split, rng, n_estimators=n_estimators)
    fvae_train, fvae_eval = factor_vae_votes or (n_train, n_test)
    fvae = compute_factor_vae(
        represent, dataset, rng, batch_size, fvae_train, fvae_eval, n_var_est=n_train
    )
    return {
        "mig": compute_mig(codes_train, factors_train, n_bins)["mig"],
        "dci_disentanglement": dci["dci_disentanglement"],
        "dci_completeness": dci["dci_completeness"],
        "dci_informativeness_test": dci["dci_informativeness_test"],
        "sap": compute_sap(*split)["sap"],
        "factor_vae_accuracy": fvae["factor_vae_eval_accuracy"],
    }
