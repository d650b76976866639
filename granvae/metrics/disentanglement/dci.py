"""Disentanglement, Completeness, Informativeness (Eastwood & Williams 2018,
"A Framework for the Quantitative Evaluation of Disentangled
Representations"), following disentanglement_lib ``metrics/dci.py``.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier

from granvae.metrics.disentanglement._common import check_codes_factors, varying_factors


def gbt_importance(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    rng: np.random.Generator,
    n_estimators: int = 100,
) -> tuple[np.ndarray, float, float]:
    """(D, F) |feature importances| of one GBT classifier per factor, plus the
    mean train and test accuracies (disentanglement_lib ``compute_importance_gbt``).
    """
    importance = np.zeros((codes_train.shape[1], factors_train.shape[1]))
    train_acc, test_acc = [], []
    for f in range(factors_train.shape[1]):
        model = GradientBoostingClassifier(
            n_estimators=n_estimators, random_state=int(rng.integers(2**31 - 1))
        )
        model.fit(codes_train, factors_train[:, f])
        importance[:, f] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(codes_train) == factors_train[:, f]))
        test_acc.append(np.mean(model.predict(codes_test) == factors_test[:, f]))
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def _normalized_entropy(weights: np.ndarray) -> np.ndarray:
    """Entropy of each row of ``weights`` (normalised to a distribution) in
    base = row length, so it lies in [0, 1]. The 1e-11 smoothing is
    disentanglement_lib's; a row of length 1 has entropy 0 (scipy would
    divide by log(1) = 0 there).
    """
    p = weights + 1e-11
    p = p / p.sum(axis=1, keepdims=True)
    if p.shape[1] <= 1:
        return np.zeros(p.shape[0])
    return -np.sum(p * np.log(p), axis=1) / np.log(p.shape[1])


def _weighted_score(importance: np.ndarray) -> float:
    """1 - normalised entropy of each row, averaged with row-mass weights
    (uniform weights when every importance is 0, as in disentanglement_lib).
    """
    per_row = 1.0 - _normalized_entropy(importance)
    mass = importance if importance.sum() > 0 else np.ones_like(importance)
    weights = mass.sum(axis=1) / mass.sum()
    return float(np.clip(np.sum(per_row * weights), 0.0, 1.0))


def dci_disentanglement(importance: np.ndarray) -> float:
    """Each code should matter for one factor: rows of the (D, F) matrix."""
    return _weighted_score(importance)


def dci_completeness(importance: np.ndarray) -> float:
    """Each factor should be captured by one code: columns of the (D, F) matrix."""
    return _weighted_score(importance.T)


def compute_dci(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    rng: np.random.Generator,
    n_estimators: int = 100,
) -> dict[str, float]:
    """DCI scores from gradient-boosted-tree feature importances.

    Matched conventions (disentanglement_lib ``compute_dci``):
      - one ``sklearn GradientBoostingClassifier`` per factor with sklearn's
        defaults; ``n_estimators=100`` is that default (disentanglement_lib
        calls ``GradientBoostingClassifier()``), lower it for speed;
      - importance matrix (D, F) = |feature_importances_|; disentanglement =
        sum_d rho_d (1 - H_F(P_d.)), completeness = sum_f rho_f (1 - H_D(P.f))
        with entropies in base F resp. D, 1e-11 smoothing, mass weights rho;
      - informativeness_{train,test} = mean classification ACCURACY over
        factors (disentanglement_lib stores accuracy although it calls the
        variables "loss"); higher is better.
    Deviations:
      - the GBT seeds come from ``rng`` (disentanglement_lib leaves them
        unseeded), so results are reproducible;
      - factors constant in the train split are skipped (a one-class GBT
        cannot be fit); with none left every score is 0;
      - a single factor gives disentanglement 1 per code (log base 1 is
        undefined in scipy); likewise a single code gives completeness 1;
      - scores are clipped to [0, 1] against float round-off.

    Returns:
        dict with dci_disentanglement, dci_completeness,
        dci_informativeness_train, dci_informativeness_test.
    """
    codes_train, factors_train = check_codes_factors(codes_train, factors_train)
    codes_test, factors_test = check_codes_factors(codes_test, factors_test)
    keep = varying_factors(factors_train)
    names = ("disentanglement", "completeness", "informativeness_train", "informativeness_test")
    if not keep.any():
        return {f"dci_{name}": 0.0 for name in names}
    importance, train_acc, test_acc = gbt_importance(
        codes_train, factors_train[:, keep], codes_test, factors_test[:, keep], rng, n_estimators
    )
    values = (dci_disentanglement(importance), dci_completeness(importance), train_acc, test_acc)
    return {f"dci_{name}": float(v) for name, v in zip(names, values, strict=True)}
