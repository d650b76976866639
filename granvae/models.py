"""Encoder/decoder networks and the FactorizedVAE module.

The conv net is the one used across the disentanglement literature for 64x64
inputs (Higgins et al., Locatello et al.): 4 stride-2 convs 32-32-64-64, FC 256,
and its transpose. The MLP variant serves tiny inputs where convs are overkill.
A model saves its constructor args as JSON beside the state dict, so a
checkpoint can be rebuilt without the code that trained it guessing the shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from granvae.schemas import ModelConfig  # re-exported: torch-free, granvae.config reads it

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"


class VAEOutput(NamedTuple):
    """x_recon holds the likelihood's parameters: logits (Bernoulli) or means (Gaussian)."""

    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor
    x_recon: torch.Tensor


def _conv_encoder(cfg: ModelConfig) -> nn.Sequential:
    side, a, b = cfg.image_size // 16, 32 * cfg.width, 64 * cfg.width
    return nn.Sequential(
        nn.Conv2d(cfg.in_channels, a, 4, 2, 1),
        nn.ReLU(),
        nn.Conv2d(a, a, 4, 2, 1),
        nn.ReLU(),
        nn.Conv2d(a, b, 4, 2, 1),
        nn.ReLU(),
        nn.Conv2d(b, b, 4, 2, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(b * side * side, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, 2 * cfg.latent_dim),
    )


def _conv_decoder(cfg: ModelConfig) -> nn.Sequential:
    side, a, b = cfg.image_size // 16, 32 * cfg.width, 64 * cfg.width
    return nn.Sequential(
        nn.Linear(cfg.latent_dim, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, b * side * side),
        nn.ReLU(),
        nn.Unflatten(1, (b, side, side)),
        nn.ConvTranspose2d(b, b, 4, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(b, a, 4, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(a, a, 4, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(a, cfg.out_channels, 4, 2, 1),
    )


def _mlp_encoder(cfg: ModelConfig) -> nn.Sequential:
    n_in = cfg.in_channels * cfg.image_size**2
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_in, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, 2 * cfg.latent_dim),
    )


def _mlp_decoder(cfg: ModelConfig) -> nn.Sequential:
    shape = (cfg.out_channels, cfg.image_size, cfg.image_size)
    return nn.Sequential(
        nn.Linear(cfg.latent_dim, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, shape[0] * shape[1] * shape[2]),
        nn.Unflatten(1, shape),
    )


def to_unit(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NCHW (the dataset layout) -> float in [0, 1], the scale every model sees."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).float() / 255.0


ARCHITECTURES = {"conv": (_conv_encoder, _conv_decoder), "mlp": (_mlp_encoder, _mlp_decoder)}


class FactorizedVAE(nn.Module):
    """q(z|x) = prod_d N(mu_d, sigma_d^2), p(z) = N(0, I), p(x|z) by `likelihood`."""

    def __init__(self, config: ModelConfig | None = None, **kwargs: object) -> None:
        super().__init__()
        self.config = config or ModelConfig(**kwargs)
        make_encoder, make_decoder = ARCHITECTURES[self.config.arch]
        self.encoder = make_encoder(self.config)
        self.decoder = make_decoder(self.config)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, sample: bool = True) -> VAEOutput:
        """sample=False decodes the posterior mean: deterministic scoring and export."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return VAEOutput(mu, logvar, z, self.decode(z))

    def save(self, directory: Path | str) -> Path:
        """Write config.json + model.pt; the folder alone rebuilds the model."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(self.config.model_dump_json(indent=2))
        tmp = directory / (WEIGHTS_FILE + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(directory / WEIGHTS_FILE)
        return directory

    @classmethod
    def load(cls, directory: Path | str, map_location: str | torch.device = "cpu") -> FactorizedVAE:
        directory = Path(directory)
        config = ModelConfig(**json.loads((directory / CONFIG_FILE).read_text()))
        model = cls(config)
        state = torch.load(directory / WEIGHTS_FILE, map_location=map_location, weights_only=True)
        model.load_state_dict(state)
        return model
