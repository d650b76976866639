"""A tiny CPU training run: the loss falls, resume reproduces, divergence fails cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from granvae.models import FactorizedVAE, ModelConfig
from granvae.objectives import ObjectiveConfig
from granvae.train import CHECKPOINT_FILE, TrainConfig, pick_device, train

MODEL = ModelConfig(arch="mlp", image_size=16, latent_dim=4, hidden=64)
OBJECTIVE = ObjectiveConfig(name="beta_stcvae", granularity=2, beta=2.0)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Bright squares at random positions: two factors a 4-d latent can learn in seconds."""
    rng = np.random.default_rng(0)
    out = np.zeros((256, 1, 16, 16), dtype=np.uint8)
    for img, (x, y) in zip(out, rng.integers(0, 12, size=(256, 2)), strict=True):
        img[0, y : y + 4, x : x + 4] = 255
    return out


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 4, "batch_size": 32, "lr": 3e-3, "seed": 7, **kw})


def test_loss_falls_and_artifacts_are_written(images, tmp_path) -> None:
    result = train(images, MODEL, OBJECTIVE, _cfg(epochs=6), tmp_path / "run", progress=False)
    assert result.status == "finished" and result.device == "cpu"
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0]
    assert (tmp_path / "run" / CHECKPOINT_FILE).exists()
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "finished" and status["epochs_completed"] == 6
    model = FactorizedVAE.load(result.model_dir)
    assert model.config == MODEL


def test_resume_continues_and_matches_an_uninterrupted_run(images, tmp_path) -> None:
    straight = train(images, MODEL, OBJECTIVE, _cfg(), tmp_path / "a", progress=False)
    train(images, MODEL, OBJECTIVE, _cfg(epochs=2), tmp_path / "b", progress=False)
    resumed = train(images, MODEL, OBJECTIVE, _cfg(), tmp_path / "b", progress=False)
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_completed == 4
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [h["loss"] for h in straight.history], rel=1e-6
    )
    a = torch.load(tmp_path / "a" / "model" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model" / "model.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_same_seed_same_result_on_cpu(images, tmp_path) -> None:
    r1 = train(images, MODEL, OBJECTIVE, _cfg(epochs=2), tmp_path / "x", progress=False)
    r2 = train(images, MODEL, OBJECTIVE, _cfg(epochs=2), tmp_path / "y", progress=False)
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]


def test_divergence_stops_with_failed_status_and_no_poisoned_checkpoint(images, tmp_path) -> None:
    result = train(images, MODEL, OBJECTIVE, _cfg(lr=1e12), tmp_path / "bad", progress=False)
    assert result.status == "failed"
    assert "non-finite" in result.reason
    assert not (tmp_path / "bad" / "model").exists()
    ckpt = tmp_path / "bad" / CHECKPOINT_FILE
    if ckpt.exists():  # an earlier, finite epoch may have been saved; never a NaN one
        state = torch.load(ckpt, weights_only=False)
        assert all(torch.isfinite(v).all() for v in state["model"].values())
    status = json.loads((tmp_path / "bad" / "status.json").read_text())
    assert status["status"] == "failed" and "non-finite" in status["reason"]


def test_too_few_images_is_a_clear_error(images, tmp_path) -> None:
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train(images[:10], MODEL, OBJECTIVE, _cfg(), tmp_path / "few", progress=False)


def test_device_choice() -> None:
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda")
