"""The inspection head: one module that turns a trained VAE into anomaly scores.

The same head computes the business metrics in torch and becomes the ONNX
graph on the edge, so the threshold calibrated in training means the same
thing on the line. Scores are deterministic (z = posterior mean).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from granvae.distributions import kl_to_standard_normal, recon_nll_map
from granvae.models import FactorizedVAE
from granvae.objectives import group_matrix

SCORES = ("neg_elbo", "recon")


class InspectionOutput(NamedTuple):
    """Field names become the ONNX output names."""

    score: torch.Tensor
    anomaly_map: torch.Tensor
    latent_mean: torch.Tensor
    group_attribution: torch.Tensor


class InspectionHead(nn.Module):
    """uint8 NHWC images in; score = recon NLL at z = mu + analytic KL (negative ELBO, nats).

    score="recon" drops the KL: a plain reconstruction-error detector, offered
    because some defects hide in the decoder's error rather than the latents.

    group_attribution is the KL of each latent group against the prior: the
    share of the score each factor group is responsible for, which tells an
    operator *which* factor raised the alarm.
    """

    def __init__(
        self, model: FactorizedVAE, groups: list[list[int]], score: str = "neg_elbo"
    ) -> None:
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.score_kind = score
        self.model = model.eval()
        self.likelihood = model.config.likelihood
        self.obs_std = model.config.obs_std
        self.register_buffer(
            "groups", group_matrix(groups, model.config.latent_dim, torch.zeros(1))
        )

    def forward(self, images: torch.Tensor) -> InspectionOutput:
        x = images.permute(0, 3, 1, 2).float() / 255.0
        mu, logvar = self.model.encode(x)
        params = self.model.decode(mu)
        nll = recon_nll_map(self.likelihood, x, params, self.obs_std)
        anomaly_map = nll.sum(1)
        kl_dims = kl_to_standard_normal(mu, logvar)
        score = anomaly_map.flatten(1).sum(1)
        if self.score_kind == "neg_elbo":
            score = score + kl_dims.sum(1)
        return InspectionOutput(score, anomaly_map, mu, kl_dims @ self.groups)


@torch.no_grad()
def score_images(
    head: InspectionHead,
    images: np.ndarray,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, np.ndarray]:
    """Score uint8 NCHW images (the dataset layout) in batches; numpy out."""
    head = head.to(device)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in InspectionOutput._fields}
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        out = head(batch.permute(0, 2, 3, 1).to(device))
        for name, value in out._asdict().items():
            parts[name].append(value.float().cpu().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
