"""Which latent group moved: per-group shift of posterior means on recent passes vs training.

Each group's recent mean is compared with its training distribution by the squared
Mahalanobis distance of the mean shift, scaled by the number of recent parts:

    T_k = m * (mean_recent_k - mean_train_k)^T  Sigma_train_k^-1  (mean_recent_k - mean_train_k)

Under no drift T_k is about chi-square with |G_k| degrees of freedom (Hotelling with the
training covariance taken as known), so each group has a p-value and the alert names the group
with the smallest one. Why this names the right factor: when a factor f moves by delta and a
group's means depend on f linearly, T_k / m = delta^2 R^2_k(f) / var(f), where R^2_k(f) is how
well group k predicts f on training data; ``alignment`` measures that without assuming the
code is linear (the correlation ratio). The group that moves most is the group most aligned
with the factor that moved, when the model encodes that factor at all: a factor a model does
not encode moves no group, and no latent test can name it (the score tests still fire).

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
    """How much of each group's variation each factor explains: (n_groups, n_factors).

    The multivariate correlation ratio tr(Sigma_k^-1 B_kj) / |G_k|, with B_kj the covariance of
    the group's means across the levels of factor j: 1 when the factor's level fixes the
    group's means, 0 when they do not depend on it. Unlike a linear R^2 it also credits codes
    that bend (a brightness coded on a curve, an orientation on a circle).
    """
    means = _check(train_means, groups, "training means")
    f = np.asarray(factors)
    if f.ndim != 2 or f.shape[0] != means.shape[0]:
        raise ValueError(f"factors must be (n, F) with n={means.shape[0]}, got {f.shape}")
    out = np.zeros((len(groups), f.shape[1]))
    for k, dims in enumerate(groups):
        z = means[:, dims]
        centre = z.mean(axis=0)
        cov = np.atleast_2d(np.cov(z, rowvar=False, bias=True)) + RIDGE * np.eye(len(dims))
        for j in range(f.shape[1]):
            between = np.zeros((len(dims), len(dims)))
            for level in np.unique(f[:, j]):
                rows = f[:, j] == level
                d = z[rows].mean(axis=0) - centre
                between += rows.mean() * np.outer(d, d)
            out[k, j] = float(np.trace(np.linalg.solve(cov, between))) / len(dims)
    return out
