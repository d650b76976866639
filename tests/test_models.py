"""Model shapes, likelihoods and the config-beside-weights save format."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from granvae.models import FactorizedVAE, ModelConfig


@pytest.mark.parametrize("arch,size", [("conv", 64), ("conv", 32), ("mlp", 16)])
def test_forward_shapes(arch: str, size: int) -> None:
    model = FactorizedVAE(ModelConfig(arch=arch, image_size=size, latent_dim=7, in_channels=3))
    out = model(torch.rand(5, 3, size, size))
    assert out._fields == ("mu", "logvar", "z", "x_recon")
    assert out.mu.shape == out.logvar.shape == out.z.shape == (5, 7)
    assert out.x_recon.shape == (5, 3, size, size)


def test_conv_encoder_is_the_literature_architecture() -> None:
    model = FactorizedVAE(ModelConfig(arch="conv", image_size=64, latent_dim=10))
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    linears = [m for m in model.encoder if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(1024, 256), (256, 20)]


def test_posterior_mean_decoding_is_deterministic() -> None:
    model = FactorizedVAE(ModelConfig(arch="mlp", image_size=16, latent_dim=3))
    x = torch.rand(4, 1, 16, 16)
    a, b = model(x, sample=False), model(x, sample=False)
    assert torch.equal(a.z, a.mu) and torch.equal(a.x_recon, b.x_recon)
    assert not torch.equal(model(x).z, a.mu)


def test_save_and_rebuild_from_config(tmp_path) -> None:
    cfg = ModelConfig(arch="conv", image_size=32, latent_dim=5, likelihood="gaussian", obs_std=0.2)
    model = FactorizedVAE(cfg)
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["latent_dim"] == 5 and saved["likelihood"] == "gaussian"
    rebuilt = FactorizedVAE.load(tmp_path / "m")
    x = torch.rand(2, 1, 32, 32)
    assert rebuilt.config == cfg
    assert torch.equal(rebuilt(x, sample=False).x_recon, model(x, sample=False).x_recon)


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValidationError, match="image_size"):
        ModelConfig(image_size=40)
    with pytest.raises(ValidationError, match="likelihood"):
        ModelConfig(likelihood="poisson")
