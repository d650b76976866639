"""The monitor names the factor that drifted, on a real (tiny) model trained on `surfaces`.

A small beta-TCVAE (granularity 1: every latent dimension is a group) is trained once; on
held-out good images each group's alignment with each known factor is measured
(group_shift.alignment). Ten lighting drifts follow (``brightness`` pushed to the top or the
bottom of its range while every other factor stays uniform, 200 parts each); the monitor sees
only the recent passes' posterior means and must name the group most aligned with lighting in
at least 9 of the 10, and name no group on an undrifted stream.

What this model does not encode it cannot name: at 32 px the brushing orientation and the feed
rate (``frequency``) explain under 1% of any group's variation (asserted below, so the day a
model encodes them this test says so); docs/line-loop.md states it.
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

SIZE, LATENT, GRANULARITY = 32, 6, 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = Surfaces(SIZE)
    rng = np.random.default_rng(0)
    factors = data.sample_factors(2048, rng)
    images = data.sample_observations_from_factors(factors, rng)
    result = train(
        images, ModelConfig(arch="mlp", image_size=SIZE, latent_dim=LATENT, hidden=128),
        ObjectiveConfig(name="beta_stcvae", beta=6.0, granularity=GRANULARITY),
        TrainConfig(epochs=15, batch_size=64, seed=0, device="cpu", num_threads=1),
        tmp_path_factory.mktemp("monitor-vae"), progress=False,
    )  # fmt: skip
    model = FactorizedVAE.load(result.model_dir).eval()
    # The reference is held-out good parts, as on the line (the first parts after deployment):
    # an encoder's means on its own training images sit measurably apart from new parts.
    held_out = data.sample_factors(2048, rng)
    ref_images = data.sample_observations_from_factors(held_out, rng)
    return data, model, held_out, _means(model, ref_images)


def _means(model: FactorizedVAE, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.encode(to_unit(images))[0].numpy().astype(np.float64)


def _drifted(data: Surfaces, factor: int, high: bool, n: int, rng) -> np.ndarray:
    """n parts with one factor pushed to the top (or bottom) half of its levels."""
    f = data.sample_factors(n, rng)
    size = data.factor_sizes[factor]
    f[:, factor] = rng.integers(size // 2, size, n) if high else rng.integers(0, size // 2, n)
    return data.sample_observations_from_factors(f, rng)


def test_monitor_names_the_lighting_group_in_9_of_10_drifts(trained):
    data, model, factors, ref_means = trained
    groups = make_groups(LATENT, GRANULARITY)
    align = group_shift.alignment(ref_means, factors, groups)
    names = list(data.factor_names)
    light = names.index("brightness")
    lighting_group = int(np.argmax(align[:, light]))
    assert names[int(np.argmax(align[lighting_group]))] == "brightness"  # the alert's label
    rng = np.random.default_rng(1)
    named = []
    for k in range(10):
        images = _drifted(data, light, high=bool(k % 2), n=200, rng=rng)
        shifts = group_shift.group_shifts(ref_means, _means(model, images), groups)
        moved = group_shift.moved_group(shifts)
        named.append((moved.group, moved.p_value))
    hits = sum(g == lighting_group for g, _ in named)
    assert hits >= 9, f"lighting group {lighting_group}; named (group, p) {named}"
    undrifted = data.sample_observations_from_factors(data.sample_factors(200, rng), rng)
    quiet = group_shift.group_shifts(ref_means, _means(model, undrifted), groups)
    assert min(s.p_value for s in quiet) > 1e-4, [s.to_json() for s in quiet]
    for unseen in ("orientation", "frequency"):  # not encoded, hence not nameable
        assert align[:, names.index(unseen)].max() < 0.01
