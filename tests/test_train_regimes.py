"""Training regimes that keep a VAE from averaging textures away: KL warm-up, flips, early
stopping on held-out ELBO, and a learned per-pixel variance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from granvae.distributions import LEARNED_STD_MAX, LEARNED_STD_MIN, gaussian_learned_nll_map
from granvae.models import FactorizedVAE, ModelConfig
from granvae.objectives import ObjectiveConfig
from granvae.train import TrainConfig, _augment, held_out_neg_elbo, kl_weight, train

MODEL = ModelConfig(arch="mlp", image_size=16, latent_dim=4, hidden=64, likelihood="gaussian")
OBJECTIVE = ObjectiveConfig(name="beta_stcvae", granularity=2, beta=1.0)


def _squares(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 1, 16, 16), dtype=np.uint8)
    for img, (x, y) in zip(out, rng.integers(0, 12, size=(n, 2)), strict=True):
        img[0, y : y + 4, x : x + 4] = 255
    return out


def test_kl_weight_rises_linearly_then_stays_at_one():
    cfg = TrainConfig(kl_warmup_epochs=2)
    assert kl_weight(cfg, 0, 0, 10) == 0.0
    assert kl_weight(cfg, 0, 5, 10) == pytest.approx(0.25)
    assert kl_weight(cfg, 1, 5, 10) == pytest.approx(0.75)
    assert kl_weight(cfg, 3, 0, 10) == 1.0
    assert kl_weight(TrainConfig(), 0, 0, 10) == 1.0


def test_flips_keep_every_image_whole():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    out = _augment(x.repeat(8, 1, 1, 1), ["hflip", "vflip"], torch.Generator().manual_seed(0))
    choices = [x[0], x[0].flip(-1), x[0].flip(-2), x[0].flip(-1).flip(-2)]
    for img in out[::2]:
        assert any(torch.equal(img, c) for c in choices)
    assert len({tuple(img.flatten().tolist()) for img in out[::2]}) > 1  # not all alike


def test_early_stopping_keeps_the_best_held_out_epoch(tmp_path):
    """lr far too high late in training would undo progress; the saved weights must be the
    epoch whose held-out negative ELBO was lowest, and training stops `patience` later."""
    cfg = TrainConfig(epochs=12, batch_size=32, lr=3e-3, seed=1, early_stop_patience=2)
    val = _squares(64, 9)
    result = train(_squares(256, 0), MODEL, OBJECTIVE, cfg, tmp_path / "run", progress=False,
                   val_images=val)  # fmt: skip
    held = [h["val_neg_elbo"] for h in result.history]
    best = int(np.argmin(held)) + 1
    assert result.best_epoch == best
    assert result.epochs_completed == min(12, best + 2)
    saved = FactorizedVAE.load(result.model_dir)
    assert held_out_neg_elbo(saved, torch.from_numpy(val), torch.device("cpu")) == pytest.approx(
        min(held), rel=1e-5
    )


def test_learned_variance_is_bounded_and_rewards_calibrated_spread():
    x = torch.zeros(1, 1, 2, 2)
    mean = torch.full_like(x, 0.1)
    nll = {raw: float(gaussian_learned_nll_map(x, torch.cat([mean, torch.full_like(x, raw)], 1))
                      .mean()) for raw in (-20.0, 0.0, 20.0)}  # fmt: skip
    lo = 0.5 * (0.01 / LEARNED_STD_MIN**2 + np.log(LEARNED_STD_MIN**2) + np.log(2 * np.pi))
    hi = 0.5 * (0.01 / LEARNED_STD_MAX**2 + np.log(LEARNED_STD_MAX**2) + np.log(2 * np.pi))
    assert nll[-20.0] == pytest.approx(lo, rel=1e-4) and nll[20.0] == pytest.approx(hi, rel=1e-4)
    assert nll[0.0] < nll[-20.0]  # an error of 0.1 is better explained by a wider spread
