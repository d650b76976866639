"""Held-out ELBO, its KL decomposition and the IWAE bound of a trained VAE.

Samplers (``elbo_terms``, ``decomposition_terms``, ``iwae_bound``) run the
model on uint8 (N, C, H, W) images and return numpy; pure functions
(``compute_elbo``, ``compute_iwae``) turn those into the named floats the
sweep logs. What is reported is always the true ELBO (recon + full KL), never
the weighted training loss, so candidates trained with different
(alpha, beta, gamma, g) are compared on the same scale.

Randomness: every sampler draws its noise from its own ``torch.Generator``
seeded by an argument, on the CPU, then moves it to the device. The same
(seed, batch_size) therefore gives the same numbers on CPU and GPU up to
floating point, and nothing touches torch's global RNG.

All log densities come from :mod:`granvae.distributions`; none is re-derived
here, so these numbers agree with the trainer and the inspection head.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from granvae.distributions import (
    kl_to_standard_normal,
    log_normal,
    log_standard_normal,
    recon_nll_map,
)
from granvae.models import FactorizedVAE, VAEOutput, to_unit
from granvae.objectives import (
    ObjectiveConfig,
    compute_terms,
    decomposition_from_densities,
    exact_log_densities,
    make_groups,
)

__all__ = [
    "DECOMPOSITION_TERMS",
    "batches",
    "compute_elbo",
    "compute_iwae",
    "decomposition_terms",
    "elbo_terms",
    "iwae_bound",
]

DECOMPOSITION_TERMS = ("mi", "tc", "tc_between", "group_kl")


def batches(
    images: np.ndarray, batch_size: int, device: torch.device | str = "cpu"
) -> Iterator[torch.Tensor]:
    """Float batches one at a time: a held-out set may not fit the device at once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(images), batch_size):
        yield to_unit(images[start : start + batch_size], device)


def _sample_posterior(mu: torch.Tensor, logvar: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """z ~ q(z|x) with noise from `gen` (CPU), so results do not depend on the device."""
    eps = torch.randn(mu.shape, generator=gen, dtype=mu.dtype).to(mu.device)
    return mu + eps * torch.exp(0.5 * logvar)


def _recon_nll(model: FactorizedVAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image, summed over pixels and channels."""
    cfg = model.config
    nll = recon_nll_map(cfg.likelihood, x, model.decode(z).float(), cfg.obs_std)
    return nll.flatten(1).sum(1)


def _prepare(model: FactorizedVAE, device: torch.device | str) -> FactorizedVAE:
    return model.to(device).eval()


@torch.no_grad()
def elbo_terms(
    model: FactorizedVAE,
    images: np.ndarray,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    rng_seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-image recon, kl and elbo = -(recon + kl), float64 arrays of shape (N,).

    recon is -log p(x|z) at ONE sample z ~ q(z|x): the standard unbiased ELBO
    estimator, the same one the trainer reports. kl is analytic, so the only
    noise is in recon. (The inspection score instead decodes z = mu to be
    deterministic; that is a different number and is not an ELBO estimate.)
    """
    model = _prepare(model, device)
    gen = torch.Generator().manual_seed(rng_seed)
    recon, kl = [], []
    for x in batches(images, batch_size, device):
        mu, logvar = model.encode(x)
        mu, logvar = mu.float(), logvar.float()
        z = _sample_posterior(mu, logvar, gen)
        recon.append(_recon_nll(model, x, z).double().cpu().numpy())
        kl.append(kl_to_standard_normal(mu, logvar).sum(1).double().cpu().numpy())
    r, k = np.concatenate(recon), np.concatenate(kl)
    return {"recon": r, "kl": k, "elbo": -(r + k)}


def compute_elbo(per_image: dict[str, np.ndarray]) -> dict[str, float]:
    """Means of elbo, recon and kl (nats per image) plus elbo_std across images."""
    elbo = np.asarray(per_image["elbo"], dtype=np.float64)
    if elbo.size == 0:
        nan = math.nan
        return {"elbo": nan, "recon": nan, "kl": nan, "elbo_std": nan}
    return {
        "elbo": float(elbo.mean()),
        "recon": float(np.mean(per_image["recon"])),
        "kl": float(np.mean(per_image["kl"])),
        "elbo_std": float(elbo.std(ddof=1)) if elbo.size > 1 else 0.0,
    }


@torch.no_grad()
def decomposition_terms(
    model: FactorizedVAE,
    images: np.ndarray,
    granularity: int,
    estimator: str = "exact",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    rng_seed: int = 0,
) -> dict[str, float]:
    """Held-out mi, tc, tc_between, group_kl (nats); mi + tc_between + group_kl is a
    Monte-Carlo estimate of the mean KL(q(z|x) || p(z)) (DESIGN.md).

    estimator "exact" (the default) sums q(z) over every held-out posterior
    (objectives.exact_log_densities, O(N^2 D)): no estimator bias and no
    dependence on batch_size, which then only sets the encoding batches.
    "mws"/"mss" estimate q(z) per minibatch as in training
    (objectives.compute_terms), biased when batch_size << N and only comparable
    at the same batch size (docs/estimators.md); batches are split as evenly as
    possible (each needs 2 images) and the result is their image-weighted mean.
    """
    n = len(images)
    if n < 2:
        raise ValueError(f"decomposition terms need at least 2 held-out images, got {n}")
    model = _prepare(model, device)
    if estimator == "exact":
        return _exact_decomposition(model, images, granularity, batch_size, device, rng_seed)
    cfg = ObjectiveConfig(name="beta_stcvae", granularity=granularity, estimator=estimator)
    gen = torch.Generator().manual_seed(rng_seed)
    sums = dict.fromkeys(DECOMPOSITION_TERMS, 0.0)
    for chunk in np.array_split(np.arange(n), math.ceil(n / max(batch_size, 2))):
        x = to_unit(images[chunk], device)
        mu, logvar = model.encode(x)
        z = _sample_posterior(mu.float(), logvar.float(), gen)
        out = VAEOutput(mu, logvar, z, model.decode(z))
        terms = compute_terms(x, out, model.config, cfg, dataset_size=n)
        for name in DECOMPOSITION_TERMS:
            sums[name] += float(terms[name]) * len(chunk)
    return {name: total / n for name, total in sums.items()}


def _exact_decomposition(
    model: FactorizedVAE, images: np.ndarray, granularity: int, batch_size: int, device, seed: int
) -> dict[str, float]:
    """Encode every image, draw one z each, then the terms with q(z) over all N (float64)."""
    gen = torch.Generator().manual_seed(seed)
    mus, logvars, zs = [], [], []
    for x in batches(images, batch_size, device):
        mu, logvar = model.encode(x)
        mu, logvar = mu.double(), logvar.double()
        mus.append(mu)
        logvars.append(logvar)
        zs.append(_sample_posterior(mu, logvar, gen))
    mu, logvar, z = torch.cat(mus), torch.cat(logvars), torch.cat(zs)
    groups = make_groups(model.config.latent_dim, granularity)
    dens = exact_log_densities(z, mu, logvar, groups)
    return {k: float(v) for k, v in decomposition_from_densities(dens).items()}


def _log_weight(
    model: FactorizedVAE, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, gen
) -> torch.Tensor:
    """One importance weight per image: log p(x|z) + log p(z) - log q(z|x), z ~ q(z|x)."""
    z = _sample_posterior(mu, logvar, gen)
    log_pz = log_standard_normal(z).sum(1)
    log_qzx = log_normal(z, mu, logvar).sum(1)
    return -_recon_nll(model, x, z) + log_pz - log_qzx


@torch.no_grad()
def iwae_bound(
    model: FactorizedVAE,
    images: np.ndarray,
    k: int = 50,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> np.ndarray:
    """Per-image IWAE bound (Burda et al. 2016), float64 (N,), nats.

    logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k, z_k ~ q(z|x).
    It is a tighter lower bound on log p(x) than the ELBO and grows with k in
    expectation, so it separates candidates whose ELBO gap is only posterior
    mismatch. The k samples are decoded one at a time: memory stays that of one
    batch whatever k is.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    model = _prepare(model, device)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for x in batches(images, batch_size, device):
        mu, logvar = model.encode(x)
        mu, logvar = mu.float(), logvar.float()
        logw = torch.stack([_log_weight(model, x, mu, logvar, gen) for _ in range(k)])
        bound = torch.logsumexp(logw.double(), dim=0) - math.log(k)
        out.append(bound.cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def compute_iwae(per_image_bound: np.ndarray, k: int) -> dict[str, float]:
    """Mean IWAE bound over images (iwae_elbo) and the k it used (iwae_k)."""
    bound = np.asarray(per_image_bound, dtype=np.float64)
    mean = float(bound.mean()) if bound.size else math.nan
    return {"iwae_elbo": mean, "iwae_k": float(k)}
