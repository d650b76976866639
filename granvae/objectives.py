"""The factorized-VAE loss family: vae, beta_vae, beta_tcvae and beta_stcvae.

Every objective is one weighting of the exact KL decomposition in DESIGN.md,

    E_x KL = I(x; z) + TC_between(groups of size g) + sum_k KL(q(z_Gk) || p(z_Gk)),

so they share one implementation and differ only in (alpha, beta, gamma, g).
The reported ELBO is always recon + analytic KL, whatever the weights: the
weighted loss is that ELBO plus (w - 1) times each decomposition term, so with
alpha = beta = gamma = 1 it is exactly -ELBO and the estimator noise cancels.
"""

from __future__ import annotations

import math

import torch

from granvae.distributions import (
    kl_to_standard_normal,
    log_normal,
    log_standard_normal,
    recon_nll_map,
)
from granvae.models import ModelConfig, VAEOutput
from granvae.schemas import ObjectiveConfig  # re-exported: torch-free, see granvae.schemas

TERM_NAMES = ("recon", "kl", "mi", "tc", "tc_between", "group_kl", "elbo", "loss")


def _vae(cfg: ObjectiveConfig, d: int) -> tuple[float, float, float, int]:
    return 1.0, 1.0, 1.0, d


def _beta_vae(cfg: ObjectiveConfig, d: int) -> tuple[float, float, float, int]:
    return cfg.beta, cfg.beta, cfg.beta, d


def _beta_tcvae(cfg: ObjectiveConfig, d: int) -> tuple[float, float, float, int]:
    return cfg.alpha, cfg.beta, cfg.gamma, 1


def _beta_stcvae(cfg: ObjectiveConfig, d: int) -> tuple[float, float, float, int]:
    if cfg.granularity > d:
        raise ValueError(f"granularity {cfg.granularity} exceeds latent_dim {d}")
    return cfg.alpha, cfg.beta, cfg.gamma, cfg.granularity


OBJECTIVES = {
    "vae": _vae,
    "beta_vae": _beta_vae,
    "beta_tcvae": _beta_tcvae,
    "beta_stcvae": _beta_stcvae,
}


def resolve_weights(cfg: ObjectiveConfig, latent_dim: int) -> tuple[float, float, float, int]:
    """(alpha, beta, gamma, g) that the named objective really optimises."""
    return OBJECTIVES[cfg.name](cfg, latent_dim)


def make_groups(latent_dim: int, granularity: int) -> list[list[int]]:
    """Contiguous groups of size g; the last one is smaller when g does not divide D."""
    if not 1 <= granularity <= latent_dim:
        raise ValueError(f"granularity must be in 1..{latent_dim}, got {granularity}")
    return [
        list(range(s, min(s + granularity, latent_dim))) for s in range(0, latent_dim, granularity)
    ]


def group_matrix(groups: list[list[int]], latent_dim: int, like: torch.Tensor) -> torch.Tensor:
    """(D, G) 0/1 indicator: one matmul turns per-dimension log densities into group sums."""
    m = torch.zeros(latent_dim, len(groups), dtype=like.dtype, device=like.device)
    for k, dims in enumerate(groups):
        m[dims, k] = 1.0
    return m


def log_importance_weights(batch: int, dataset_size: int, estimator: str, like: torch.Tensor):
    """(B, B) log weights w_ij of sample j when estimating q(z_i); every row sums to one.

    mws: minibatch weighted sampling, 1 / B everywhere. Chen et al. write
    1 / (N B); that extra 1/N is a constant that leaves every gradient alone but
    shifts each log q(z_S) by -log N, so the *reported* TC would be off by
    (D - 1) log N nats. Weights that sum to one make the estimate exact when the
    batch is the whole data set (B = N) and consistent as B grows.
    mss: minibatch stratified sampling (Chen et al. 2018, appendix C.2): sample
    i's own posterior gets 1/N (the diagonal), one other sample (i - 1, the
    last one for row 0) stands for the N - B data points outside the batch and
    gets (N - M) / (N M), the rest get 1/M, M = B - 1. Then E[q_hat(z_i)] =
    q(z_i) exactly when the batch is a uniform draw from the data set
    (tests/test_estimators_exact.py). The reference code wrote the diagonal as
    `view(-1)[::M + 1]`, a stride of B, which fills column 0 instead; that
    estimator is almost MWS and does not sum to one per row.
    """
    if batch < 2:
        raise ValueError("the aggregate-posterior estimators need a batch of at least 2")
    if estimator == "mws":
        return torch.full((batch, batch), -math.log(batch), dtype=like.dtype, device=like.device)
    if estimator != "mss":
        raise ValueError(f"estimator must be 'mws' or 'mss', got {estimator!r}")
    n, m = dataset_size, batch - 1
    if n < batch:
        raise ValueError(f"mss needs dataset_size >= batch, got {n} < {batch}")
    w = torch.full((batch, batch), 1.0 / m, dtype=like.dtype, device=like.device)
    rows = torch.arange(batch, device=like.device)
    w[rows, rows] = 1.0 / n
    w[rows, (rows - 1) % batch] = (n - m) / (n * m)
    return w.log()


def aggregate_log_densities(
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    groups: list[list[int]],
    dataset_size: int,
    estimator: str = "mws",
) -> dict[str, torch.Tensor]:
    """Per-sample log q(z), sum_k log q(z_Gk), sum_d log q(z_d), log q(z|x), log p(z).

    The B x B x D matrix log q(z_id | x_j) is built once; every subset term is a
    sum over its dimensions then one logsumexp over j, so the cost is O(B^2 D)
    whatever the granularity.
    """
    batch, d = z.shape
    mat = log_normal(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # (B, B, D)
    logw = log_importance_weights(batch, dataset_size, estimator, z)
    log_qz = torch.logsumexp(logw + mat.sum(2), dim=1)
    group_sums = mat @ group_matrix(groups, d, z)  # (B, B, G)
    log_qz_groups = torch.logsumexp(logw.unsqueeze(2) + group_sums, dim=1).sum(1)
    log_qz_dims = torch.logsumexp(logw.unsqueeze(2) + mat, dim=1).sum(1)
    return {
        "log_qz": log_qz,
        "log_qz_groups": log_qz_groups,
        "log_qz_dims": log_qz_dims,
        "log_qz_x": torch.diagonal(mat, dim1=0, dim2=1).sum(0),
        "log_pz": log_standard_normal(z).sum(1),
    }


def exact_log_densities(
    z: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    groups: list[list[int]],
    chunk: int = 256,
) -> dict[str, torch.Tensor]:
    """aggregate_log_densities' keys with q(z_S) summed over ALL N posteriors, not a batch.

    For a held-out set of a few thousand images this is affordable (O(N^2 D),
    `chunk` rows at a time, so memory is chunk x N x D) and it removes the
    estimators' bias and their dependence on the batch size (docs/estimators.md).
    """
    n, d = z.shape
    gm = group_matrix(groups, d, z)
    log_n = math.log(n)
    parts: dict[str, list[torch.Tensor]] = {"log_qz": [], "log_qz_groups": [], "log_qz_dims": []}
    for start in range(0, n, chunk):
        zc = z[start : start + chunk]
        mat = log_normal(zc.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))  # (c, N, D)
        parts["log_qz"].append(torch.logsumexp(mat.sum(2), dim=1) - log_n)
        parts["log_qz_groups"].append((torch.logsumexp(mat @ gm, dim=1) - log_n).sum(1))
        parts["log_qz_dims"].append((torch.logsumexp(mat, dim=1) - log_n).sum(1))
    out = {k: torch.cat(v) for k, v in parts.items()}
    out["log_qz_x"] = log_normal(z, mu, logvar).sum(1)
    out["log_pz"] = log_standard_normal(z).sum(1)
    return out


def decomposition_from_densities(dens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mi, tc, tc_between, group_kl (batch means) from per-sample log densities."""
    return {
        "mi": (dens["log_qz_x"] - dens["log_qz"]).mean(),
        "tc": (dens["log_qz"] - dens["log_qz_dims"]).mean(),
        "tc_between": (dens["log_qz"] - dens["log_qz_groups"]).mean(),
        "group_kl": (dens["log_qz_groups"] - dens["log_pz"]).mean(),
    }


def compute_terms(
    x: torch.Tensor,
    out: VAEOutput,
    model_cfg: ModelConfig,
    cfg: ObjectiveConfig,
    dataset_size: int,
) -> dict[str, torch.Tensor]:
    """Named scalar terms (batch means, nats per image) of the objective `cfg`."""
    alpha, beta, gamma, g = resolve_weights(cfg, model_cfg.latent_dim)
    nll = recon_nll_map(model_cfg.likelihood, x, out.x_recon.float(), model_cfg.obs_std)
    recon = nll.flatten(1).sum(1).mean()
    kl = kl_to_standard_normal(out.mu.float(), out.logvar.float()).sum(1).mean()
    groups = make_groups(model_cfg.latent_dim, g)
    z, mu, logvar = out.z.float(), out.mu.float(), out.logvar.float()  # bf16 is too coarse here
    dens = aggregate_log_densities(z, mu, logvar, groups, dataset_size, cfg.estimator)
    terms = decomposition_from_densities(dens)
    mi, tc, tc_between, group_kl = (terms[k] for k in ("mi", "tc", "tc_between", "group_kl"))
    elbo = -(recon + kl)
    if alpha == beta == gamma:
        # One weight on the whole KL: use the analytic KL, exact and noise-free.
        loss = recon + alpha * kl
    else:
        loss = recon + kl + (alpha - 1) * mi + (beta - 1) * tc_between + (gamma - 1) * group_kl
    return {
        "recon": recon,
        "kl": kl,
        "mi": mi,
        "tc": tc,
        "tc_between": tc_between,
        "group_kl": group_kl,
        "elbo": elbo,
        "loss": loss,
    }
