"""Which latent group moved: per-group shift of posterior means on recent passes vs training.

Each group's recent mean is compared with its training distribution by the squared
Mahalanobis distance of the mean shift, scaled by the number of recent parts:

    T_k = m * (mean_recent_k - mean_train_k)^T  Sigma_train_k^-1  (mean_recent_k - mean_train_k)

Under no drift T_k is about chi-square with |G_k| degrees of freedom (Hotelling with the
training covariance taken as known), so each group has a p-value and the alert names the group
with the smallest one. Why this names the right factor: when a factor f moves by delta and a
group's means depend on f linearly, T_k / m = delta^2 R^2_k(f) / var(f), where R^2_k(f) is how
well group k predicts f on training data (``alignment``); the group that moves most is the group
most aligned with the factor that moved.

``alignment`` needs the factors (known on generated data, e.g. surfaces: lighting is
``brightness``, feed rate ``frequency``); with it, a report can say "group 2 (brightness)".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

RIDGE = 1e-6  # keeps a near-singular group covariance (a collapsed unit) invertible


def _check(means: np.ndarray, groups: list[list[int]], name: str) -> np.ndarray:
    arr = np.asarray(means, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"{name}: need an (n >= 2, D) array of latent means, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: latent means must be finite")
    dims = sorted(d for g in groups for d in g)
    if not dims or dims[-1] >= arr.shape[1] or len(dims) != len(set(dims)):
        raise ValueError(f"groups {groups} do not partition {arr.shape[1]} latent dimensions")
    return arr


@dataclass(frozen=True)
class GroupShift:
    """One group's shift: its statistic, degrees of freedom and p-value."""

    group: int
    dims: list[int]
    statistic: float
    p_value: float
    mean_shift_sd: float  # root mean squared shift per dimension, in training SDs

    def to_json(self) -> dict[str, object]:
        return {"group": self.group, "dims": self.dims, "statistic": self.statistic,
                "p_value": self.p_value, "mean_shift_sd": self.mean_shift_sd}  # fmt: skip


def group_shifts(
    train_means: np.ndarray, recent_means: np.ndarray, groups: list[list[int]]
) -> list[GroupShift]:
    """T_k and its chi-square p-value for every group (in group order)."""
    train = _check(train_means, groups, "training means")
    recent = _check(recent_means, groups, "recent means")
    if recent.shape[1] != train.shape[1]:
        raise ValueError(f"recent means have {recent.shape[1]} dims, training {train.shape[1]}")
    out = []
    for k, dims in enumerate(groups):
        t, r = train[:, dims], recent[:, dims]
        delta = r.mean(axis=0) - t.mean(axis=0)
        cov = np.atleast_2d(np.cov(t, rowvar=False)) + RIDGE * np.eye(len(dims))
        stat = float(len(r) * delta @ np.linalg.solve(cov, delta))
        sd = np.sqrt(np.diag(cov))
        out.append(GroupShift(k, list(dims), stat, float(stats.chi2.sf(stat, len(dims))),
                              float(np.sqrt(np.mean((delta / sd) ** 2)))))  # fmt: skip
    return out


def moved_group(shifts: list[GroupShift]) -> GroupShift:
    """The group the evidence points at: smallest p-value, ties broken by the statistic."""
    return min(shifts, key=lambda s: (s.p_value, -s.statistic))


def alignment(
    train_means: np.ndarray, factors: np.ndarray, groups: list[list[int]]
) -> np.ndarray:
    """R^2 of a linear fit of each factor from each group's means: (n_groups, n_factors).

    Circular factors (orientation) are only partly linear in any code; R^2 still ranks groups.
    """
    means = _check(train_means, groups, "training means")
    f = np.asarray(factors, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] != means.shape[0]:
        raise ValueError(f"factors must be (n, F) with n={means.shape[0]}, got {f.shape}")
    out = np.zeros((len(groups), f.shape[1]))
    for k, dims in enumerate(groups):
        x = np.column_stack([np.ones(len(means)), means[:, dims]])
        for j in range(f.shape[1]):
            y = f[:, j]
            if np.ptp(y) == 0:
                continue
            coef, *_ = np.linalg.lstsq(x, y, rcond=None)
            resid = y - x @ coef
            out[k, j] = 1.0 - resid.var() / y.var()
    return out
