"""The monitor names the factor that drifted, on a real (tiny) model trained on `surfaces`.

Lighting (``brightness``), feed rate (``frequency``) and ``orientation`` are known factors of
the generator. A small factorized VAE is trained once; on its training images each group's
alignment with each factor is measured (R^2, group_shift.alignment). Ten drifts follow, each
moving one known factor to one end of its range while every other factor stays uniform; the
monitor sees only the recent passes' posterior means and must name the group most aligned with
the factor that moved in at least 9 of the 10.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from granvae.data.surfaces import Surfaces
from granvae.models import FactorizedVAE, ModelConfig, to_unit
from granvae.monitor import group_shift
from granvae.objectives import ObjectiveConfig, make_groups
from granvae.train import TrainConfig, train

SIZE, LATENT, GRANULARITY = 32, 6, 2
KNOWN = {"brightness": "lighting", "frequency": "feed rate", "orientation": "orientation"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = Surfaces(SIZE)
    rng = np.random.default_rng(0)
    factors = data.sample_factors(2048, rng)
    images = data.sample_observations_from_factors(factors, rng)
    result = train(
        images, ModelConfig(arch="mlp", image_size=SIZE, latent_dim=LATENT, hidden=128),
        ObjectiveConfig(name="beta_stcvae", beta=2.0, granularity=GRANULARITY),
        TrainConfig(epochs=8, batch_size=64, seed=0, device="cpu", num_threads=1),
        tmp_path_factory.mktemp("monitor-vae"), progress=False,
    )  # fmt: skip
    model = FactorizedVAE.load(result.model_dir).eval()
    return data, model, factors, _means(model, images)


def _means(model: FactorizedVAE, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.encode(to_unit(images))[0].numpy().astype(np.float64)


def _drifted(data: Surfaces, factor: int, high: bool, n: int, rng) -> np.ndarray:
    """n parts with one factor pushed to the top (or bottom) half of its levels."""
    f = data.sample_factors(n, rng)
    size = data.factor_sizes[factor]
    half = rng.integers(size // 2, size, n) if high else rng.integers(0, size // 2, n)
    f[:, factor] = half
    return data.sample_observations_from_factors(f, rng)


def test_monitor_names_the_drifted_factor_in_9_of_10(trained):
    data, model, factors, train_means = trained
    groups = make_groups(LATENT, GRANULARITY)
    align = group_shift.alignment(train_means, factors, groups)
    names = list(data.factor_names)
    rng = np.random.default_rng(1)
    hits, log = 0, []
    for k in range(10):
        name = list(KNOWN)[k % 3]
        j = names.index(name)
        images = _drifted(data, j, high=bool(k % 2), n=200, rng=rng)
        moved = group_shift.moved_group(
            group_shift.group_shifts(train_means, _means(model, images), groups)
        )
        expected = int(np.argmax(align[:, j]))
        hits += moved.group == expected
        log.append((name, expected, moved.group, round(moved.p_value, 6)))
    assert hits >= 9, f"named {hits}/10: (factor, aligned group, named group, p) {log}"
    # and without drift nothing stands out: the same parts, undrifted
    undrifted = data.sample_observations_from_factors(data.sample_factors(200, rng), rng)
    quiet = group_shift.group_shifts(train_means, _means(model, undrifted), groups)
    assert min(s.p_value for s in quiet) > 1e-4, [s.to_json() for s in quiet]
