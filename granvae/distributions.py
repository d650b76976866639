"""Log densities written once, so objectives, metrics and export agree on every nat.

Chen et al.'s beta-TCVAE code keeps log p(x|z), log p(z), log q(z|x) and
log q(z) in one place; this module is that place for granvae.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from granvae.schemas import PARAMS_PER_CHANNEL  # noqa: F401 - re-exported, lives with ModelConfig

LOG_2PI = math.log(2.0 * math.pi)


def log_normal(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mu, exp(logvar)); broadcasting builds the B x B x D matrix."""
    return -0.5 * (LOG_2PI + logvar + (x - mu).pow(2) * torch.exp(-logvar))


def log_standard_normal(x: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; 0, 1): the factorized prior p(z)."""
    return -0.5 * (LOG_2PI + x.pow(2))


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-dimension analytic KL(N(mu, var) || N(0, 1)); shape of mu."""
    return 0.5 * (mu.pow(2) + torch.exp(logvar) - 1.0 - logvar)


def bernoulli_nll_map(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel -log p(x|z) for a Bernoulli decoder (x may be grey levels in [0, 1]).

    Written as softplus(l) - x l rather than F.binary_cross_entropy_with_logits
    so the ONNX exporter sees two plain ops and the edge graph matches torch.
    """
    return F.softplus(logits) - x * logits


def gaussian_nll_map(x: torch.Tensor, mean: torch.Tensor, obs_std: float) -> torch.Tensor:
    """Per-pixel -log p(x|z) for a Gaussian decoder with a fixed observation std."""
    return 0.5 * ((x - mean) / obs_std).pow(2) + math.log(obs_std) + 0.5 * LOG_2PI


# A learned per-pixel std lives in [LEARNED_STD_MIN, LEARNED_STD_MAX]: a floor near the sensor
# noise (about 3 grey levels) stops the decoder from buying likelihood with a vanishing
# variance on flat pixels, and the ceiling stops it from explaining a whole texture as noise.
LEARNED_STD_MIN = 0.01
LEARNED_STD_MAX = 0.5


def learned_logvar(raw: torch.Tensor) -> torch.Tensor:
    """Decoder's raw variance channels -> log variance, squashed into the allowed range."""
    lo, hi = 2.0 * math.log(LEARNED_STD_MIN), 2.0 * math.log(LEARNED_STD_MAX)
    return lo + (hi - lo) * torch.sigmoid(raw)


def gaussian_learned_nll_map(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Per-pixel -log p(x|z) when the decoder predicts a mean and a variance per pixel.

    ``params`` holds C mean channels then C raw variance channels. A defect then stands out
    where the residual is large *for that pixel*: busy texture is allowed a wider spread.
    """
    mean, raw = params.chunk(2, dim=1)
    logvar = learned_logvar(raw)
    return 0.5 * ((x - mean).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI)


NllMap = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]

NLL_MAPS: dict[str, NllMap] = {
    "bernoulli": lambda x, params, _std: bernoulli_nll_map(x, params),
    "gaussian": gaussian_nll_map,
    "gaussian_learned": lambda x, params, _std: gaussian_learned_nll_map(x, params),
}


def recon_nll_map(likelihood: str, x: torch.Tensor, params: torch.Tensor, obs_std: float):
    """Per-pixel reconstruction NLL, (N, C, H, W); the anomaly map sums it over channels."""
    try:
        fn = NLL_MAPS[likelihood]
    except KeyError:
        raise ValueError(
            f"likelihood must be one of {sorted(NLL_MAPS)}, got {likelihood!r}"
        ) from None
    return fn(x, params, obs_std)


def recon_mean(likelihood: str, params: torch.Tensor) -> torch.Tensor:
    """The decoder's expected image, for pictures and reconstruction errors."""
    if likelihood == "bernoulli":
        return torch.sigmoid(params)
    if likelihood == "gaussian_learned":
        return params.chunk(2, dim=1)[0]
    return params
