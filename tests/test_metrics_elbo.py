"""Held-out ELBO, IWAE and decomposition terms on a tiny trained VAE: identities and bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from granvae.metrics.elbo import (
    compute_elbo,
    compute_iwae,
    decomposition_terms,
    elbo_terms,
    iwae_bound,
)
from granvae.models import FactorizedVAE, ModelConfig
from granvae.objectives import ObjectiveConfig, make_groups
from granvae.scoring import InspectionHead, score_images
from granvae.train import TrainConfig, train

LATENT = 4


def squares(n: int, seed: int) -> np.ndarray:
    """uint8 (n, 1, 16, 16): a bright 5x5 square at a random place; 2 factors a VAE can learn."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 1, 16, 16), dtype=np.uint8)
    for i, (r, c) in enumerate(rng.integers(0, 12, size=(n, 2))):
        out[i, 0, r : r + 5, c : c + 5] = 255
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run far faster on one thread than on cores shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> FactorizedVAE:
    # Gaussian likelihood: a Bernoulli decoder collapses the posterior this early in training,
    # and the decomposition and IWAE checks need a model that actually uses its latents.
    cfg = ModelConfig(
        arch="mlp", image_size=16, latent_dim=LATENT, hidden=64, likelihood="gaussian", obs_std=0.2
    )
    out = tmp_path_factory.mktemp("elbo")
    result = train(
        squares(256, seed=0),
        cfg,
        ObjectiveConfig(name="vae"),
        TrainConfig(epochs=4, batch_size=32, lr=3e-3, device="cpu"),
        out,
        progress=False,
    )
    assert result.status == "finished"
    return FactorizedVAE.load(result.model_dir)


@pytest.fixture(scope="module")
def held_out() -> np.ndarray:
    return squares(128, seed=1)


def test_elbo_is_minus_recon_plus_kl_per_image(model, held_out) -> None:
    per = elbo_terms(model, held_out, batch_size=50)
    assert all(v.shape == (128,) for v in per.values())
    np.testing.assert_allclose(per["elbo"], -(per["recon"] + per["kl"]))
    m = compute_elbo(per)
    assert m["elbo"] == pytest.approx(-(m["recon"] + m["kl"]))
    assert m["kl"] > 1.0 and m["elbo_std"] > 0  # the latents are in use
    assert all(type(v) is float for v in m.values())


def test_kl_matches_the_inspection_head(model, held_out) -> None:
    """Both paths compute the analytic KL; the head's group attribution sums to it."""
    per = elbo_terms(model, held_out)
    head = score_images(InspectionHead(model, make_groups(LATENT, 2)), held_out)
    np.testing.assert_allclose(per["kl"], head["group_attribution"].sum(1), rtol=1e-4)


def test_elbo_is_deterministic_given_the_seed(model, held_out) -> None:
    a, b = elbo_terms(model, held_out, rng_seed=3), elbo_terms(model, held_out, rng_seed=3)
    np.testing.assert_array_equal(a["elbo"], b["elbo"])
    c = elbo_terms(model, held_out, rng_seed=4)
    assert not np.array_equal(a["recon"], c["recon"])
    np.testing.assert_array_equal(a["kl"], c["kl"])  # analytic: no noise
    np.testing.assert_array_equal(iwae_bound(model, held_out, 5), iwae_bound(model, held_out, 5))


def test_iwae_bounds_the_elbo_and_grows_with_k(model, held_out) -> None:
    elbo = compute_elbo(elbo_terms(model, held_out))["elbo"]
    iwae = {k: iwae_bound(model, held_out, k=k, batch_size=64, seed=7) for k in (1, 5, 50)}
    means = {k: compute_iwae(v, k)["iwae_elbo"] for k, v in iwae.items()}
    # k = 1 is the ELBO estimator with a Monte-Carlo KL: equal in expectation.
    assert means[1] == pytest.approx(elbo, abs=1.0)
    assert means[50] >= elbo - 0.5
    assert means[50] >= means[5] - 0.2 >= means[1] - 0.4
    assert means[50] > means[1]
    assert compute_iwae(iwae[50], 50) == {"iwae_elbo": means[50], "iwae_k": 50.0}


def test_iwae_bounds_the_elbo_per_image_on_the_same_images(model, held_out) -> None:
    """Per image, over 16 seeds: E[IWAE_20] >= E[ELBO] and E[IWAE_1] = E[ELBO] (IWAE with
    k = 1 is the ELBO estimator with a Monte-Carlo KL). Tolerance: 4 standard errors of
    each image's own seed-to-seed spread."""
    seeds = range(16)
    elbo = np.stack([elbo_terms(model, held_out, rng_seed=s)["elbo"] for s in seeds])
    gaps = {
        k: np.stack([iwae_bound(model, held_out, k=k, seed=100 + s) for s in seeds]) - elbo
        for k in (1, 20)
    }
    se = {k: g.std(0, ddof=1) / np.sqrt(len(seeds)) for k, g in gaps.items()}
    mean = {k: g.mean(0) for k, g in gaps.items()}
    assert elbo.shape == gaps[1].shape == (len(seeds), len(held_out))
    assert np.all(np.abs(mean[1]) <= 4 * se[1])
    assert np.all(mean[20] >= -4 * se[20])
    assert mean[20].mean() > 4 * np.sqrt((se[20] ** 2).sum()) / len(held_out)  # tighter on average


def test_decomposition_terms_sum_to_the_kl(model, held_out) -> None:
    kl = compute_elbo(elbo_terms(model, held_out))["kl"]
    sums = []
    for g in (1, 2, LATENT):
        t = decomposition_terms(model, held_out, granularity=g, batch_size=64, rng_seed=0)
        assert set(t) == {"mi", "tc", "tc_between", "group_kl"}
        sums.append(t["mi"] + t["tc_between"] + t["group_kl"])
        if g == 1:
            assert t["tc_between"] == pytest.approx(t["tc"], abs=1e-4)
        if g == LATENT:
            assert t["tc_between"] == pytest.approx(0.0, abs=1e-4)
    # mi + tc_between + group_kl = mean log q(z|x) - log p(z): the same z for every g
    assert sums == pytest.approx([sums[0]] * 3, abs=1e-3)
    assert sums[0] == pytest.approx(kl, abs=0.1 * kl + 0.3)  # MC estimate of the analytic KL


def test_decomposition_handles_a_remainder_of_one_and_mss(model, held_out) -> None:
    t = decomposition_terms(model, held_out[:65], granularity=2, estimator="mss", batch_size=64)
    assert all(math.isfinite(v) for v in t.values())
    with pytest.raises(ValueError, match="at least 2"):
        decomposition_terms(model, held_out[:1], granularity=2)


def test_empty_inputs_give_nan_not_a_crash() -> None:
    m = compute_elbo({"elbo": np.zeros(0), "recon": np.zeros(0), "kl": np.zeros(0)})
    assert all(math.isnan(v) for v in m.values())
    assert math.isnan(compute_iwae(np.zeros(0), 10)["iwae_elbo"])


def test_bounds_are_exact_when_the_posterior_is_the_prior() -> None:
    """q(z|x) = p(z) and a decoder that ignores z: every log weight is log p(x), for all k."""
    model = FactorizedVAE(ModelConfig(arch="mlp", image_size=16, latent_dim=LATENT, hidden=16))
    with torch.no_grad():
        for layer in (model.encoder[-1], model.decoder[-2]):
            layer.weight.zero_()
        model.encoder[-1].bias.zero_()
    images = squares(10, seed=2)
    per = elbo_terms(model, images)
    np.testing.assert_allclose(per["kl"], 0.0, atol=1e-6)
    for k in (1, 7):
        np.testing.assert_allclose(iwae_bound(model, images, k=k), per["elbo"], rtol=1e-5)
