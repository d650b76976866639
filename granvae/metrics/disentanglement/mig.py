"""Mutual Information Gap (Chen et al. 2018, "Isolating Sources of
Disentanglement in VAEs"), following disentanglement_lib ``metrics/mig.py``.
"""

from __future__ import annotations

import numpy as np

from granvae.metrics.disentanglement._common import (
    check_codes_factors,
    discrete_entropy,
    discrete_mutual_info,
    histogram_discretize,
    top_two_gap,
    varying_factors,
)


def compute_mig(codes: np.ndarray, factors: np.ndarray, n_bins: int = 20) -> dict[str, float]:
    """MIG = mean over factors of (I(top code; f) - I(second code; f)) / H(f).

    Matched conventions (disentanglement_lib ``compute_mig``):
      - codes discretised per dimension into ``n_bins`` (20) equal-width bins
        (``_histogram_discretize``), factors used as given (discrete indices);
      - MI and entropy from ``sklearn.metrics.mutual_info_score`` (nats);
      - normalised by the factor's entropy, averaged uniformly over factors.
    Deviations:
      - constant factors (zero entropy) are skipped; disentanglement_lib
        divides by zero and returns NaN. With no varying factor, MIG is 0;
      - with a single code dimension the "second" MI is taken as 0;
      - arrays are (N, D) / (N, F) rather than transposed.

    Args:
        codes: (N, D) float codes (e.g. encoder means).
        factors: (N, F) integer ground-truth factor indices.
        n_bins: equal-width bins per code dimension.

    Returns:
        ``{"mig": ...}`` in [0, 1].
    """
    codes, factors = check_codes_factors(codes, factors)
    keep = varying_factors(factors)
    if not keep.any():
        return {"mig": 0.0}
    factors = factors[:, keep]
    mi = discrete_mutual_info(histogram_discretize(codes, n_bins), factors)
    gap = top_two_gap(mi) / discrete_entropy(factors)
    return {"mig": float(np.clip(np.mean(gap), 0.0, 1.0))}
