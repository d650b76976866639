"""The model, objective and training blocks of params.yaml, without torch.

`granvae.config.Settings` is built from these; the read-only registry commands
(`granvae models`, `promote`, `rollback`) validate params.yaml through it, and importing
torch for three pydantic classes cost them ~2 s of start-up on a 2-core box
(benchmarks/cli_startup.py). So the classes live here, and granvae.models, .objectives and
.train re-export them for the code that builds networks from them.
tests/test_cli_startup.py fails if a registry command imports torch again.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

# Output channels per image channel: the learned-variance decoder emits mean and variance.
PARAMS_PER_CHANNEL = {"bernoulli": 1, "gaussian": 1, "gaussian_learned": 2}


class ModelConfig(BaseModel):
    """Constructor args of FactorizedVAE; what config.json holds."""

    arch: str = Field("conv", pattern="^(conv|mlp)$")
    in_channels: int = Field(1, ge=1, le=4)
    image_size: int = Field(64, ge=4)
    latent_dim: int = Field(10, ge=1)
    hidden: int = Field(256, ge=8)
    likelihood: str = Field("bernoulli", pattern="^(bernoulli|gaussian|gaussian_learned)$")
    obs_std: float = Field(0.1, gt=0)  # fixed std of "gaussian"; unused by the other two
    width: int = Field(1, ge=1, le=8)  # multiplies the conv channels (32-32-64-64)

    @property
    def out_channels(self) -> int:
        """Decoder output channels: the likelihood's parameters per image channel."""
        return self.in_channels * PARAMS_PER_CHANNEL[self.likelihood]

    @field_validator("image_size")
    @classmethod
    def _conv_friendly(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"image_size must be a multiple of 16 (four stride-2 layers), got {v}")
        return v


class ObjectiveConfig(BaseModel):
    """Which member of the family, and its weights; see `resolve_weights`."""

    name: str = Field("beta_stcvae", pattern="^(vae|beta_vae|beta_tcvae|beta_stcvae)$")
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(1.0, ge=0)
    gamma: float = Field(1.0, ge=0)
    granularity: int = Field(1, ge=1)
    estimator: str = Field("mws", pattern="^(mws|mss)$")


AUGMENTS = ("hflip", "vflip", "rot180")


class TrainConfig(BaseModel):
    """How one candidate trains.

    kl_warmup_epochs: the KL-side terms are scaled from 0 to 1 over this many epochs, so
    the decoder learns to use z before the prior pulls every posterior onto it (the
    collapse seen on real textures). augment: flips a product allows (a texture does,
    an aligned part with a notch on one side does not). early_stop_patience: stop when
    the held-out negative ELBO has not improved for this many epochs and keep the best
    epoch's weights (needs val images).
    """

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    device: str = Field("auto", pattern="^(auto|cpu|cuda(:[0-9]+)?)$")
    num_threads: int | None = Field(None, ge=1)
    kl_warmup_epochs: float = Field(0.0, ge=0)
    augment: list[Literal["hflip", "vflip", "rot180"]] = Field(default_factory=list)
    early_stop_patience: int | None = Field(None, ge=1)
