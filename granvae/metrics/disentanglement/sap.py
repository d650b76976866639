"""Separated Attribute Predictability (Kumar et al. 2018, "Variational
Inference of Disentangled Latent Concepts from Unlabeled Observations",
Sec. 3), following disentanglement_lib ``metrics/sap_score.py``.
"""

from __future__ import annotations

import numpy as np
from sklearn.svm import LinearSVC

from granvae.metrics.disentanglement._common import (
    check_codes_factors,
    top_two_gap,
    varying_factors,
)


def _discrete_score(
    code_train: np.ndarray, y_train: np.ndarray, code_test: np.ndarray, y_test: np.ndarray
) -> float:
    """Test accuracy of a 1-D linear SVM predicting the factor from one code."""
    classifier = LinearSVC(C=0.01, class_weight="balanced")
    classifier.fit(code_train[:, None], y_train)
    return float(np.mean(classifier.predict(code_test[:, None]) == y_test))


def _continuous_score(code: np.ndarray, y: np.ndarray) -> float:
    """Squared Pearson correlation; 0 when the code dimension is constant."""
    cov = np.cov(code, y, ddof=1)
    if cov[0, 0] <= 1e-12 or cov[1, 1] <= 1e-12:
        return 0.0
    return float(cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]))


def sap_score_matrix(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    continuous_factors: bool = False,
) -> np.ndarray:
    """(D, F) predictability of each factor from each single code dimension."""
    n_codes, n_factors = codes_train.shape[1], factors_train.shape[1]
    scores = np.zeros((n_codes, n_factors))
    for d in range(n_codes):
        for f in range(n_factors):
            if continuous_factors:
                scores[d, f] = _continuous_score(codes_train[:, d], factors_train[:, f])
            else:
                scores[d, f] = _discrete_score(
                    codes_train[:, d], factors_train[:, f], codes_test[:, d], factors_test[:, f]
                )
    return scores


def compute_sap(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    continuous_factors: bool = False,
) -> dict[str, float]:
    """SAP = mean over factors of the gap between the two most predictive codes.

    Matched conventions (disentanglement_lib ``compute_sap``):
      - discrete factors: per (code, factor) a ``LinearSVC(C=0.01,
        class_weight="balanced")`` fit on the raw (unstandardised) 1-D code of
        the train split, score = accuracy on the test split;
      - continuous factors: score = squared correlation on the train split
        (the test split is unused), 0 for a constant code dimension;
      - SAP = mean over factors of (best - second best) score.
    Deviations:
      - factors constant in the train split are skipped (LinearSVC cannot fit
        one class); with no varying factor SAP is 0;
      - with a single code dimension the second-best score is taken as 0;
      - arrays are (N, D) / (N, F) rather than transposed.

    Returns:
        ``{"sap": ...}`` in [0, 1].
    """
    codes_train, factors_train = check_codes_factors(codes_train, factors_train)
    codes_test, factors_test = check_codes_factors(codes_test, factors_test)
    keep = varying_factors(factors_train)
    if not keep.any():
        return {"sap": 0.0}
    scores = sap_score_matrix(
        codes_train,
        factors_train[:, keep],
        codes_test,
        factors_test[:, keep],
        continuous_factors,
    )
    return {"sap": float(np.clip(np.mean(top_two_gap(scores)), 0.0, 1.0))}
