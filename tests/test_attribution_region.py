"""Region attribution: the group whose reset removes the anomaly inside the defect mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from granvae.metrics.attribution_region import (
    best_map_accuracy,
    class_group_test,
    combine_seeds,
    explaining_groups,
    head_region_drops,
    region_drops,
)
from granvae.models import FactorizedVAE, ModelConfig
from granvae.scoring import InspectionHead

H = W = 8


def _linear_world():
    """A decoder whose group 1 paints only inside the mask and group 0 only outside it.

    Image = sum_d mu_d * basis_d. Dims 0-1 (group 0) light the left half, dims 2-3
    (group 1) the top-right quarter, which is the defect mask. The part itself is black,
    so the anomaly is the decoding: group 1's deviation makes the in-mask anomaly, group
    0's (larger) deviation the out-of-mask one.
    """
    basis = torch.zeros(4, H, W)
    basis[0, :, :4] = 1.0
    basis[1, 4:, :4] = 1.0
    basis[2, :4, 4:] = 1.0
    basis[3, :2, 4:] = 1.0
    mask = torch.zeros(1, H, W)
    mask[0, :4, 4:] = 1
    x = torch.zeros(1, H, W)

    def decode(mu: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,dhw->bhw", mu, basis)

    def anomaly_map(params: torch.Tensor) -> torch.Tensor:
        return (x - params) ** 2

    mu = torch.tensor([[3.0, 3.0, 1.0, 1.0]])
    return mu, decode, anomaly_map, mask


def test_reset_of_the_group_painting_the_defect_explains_it():
    mu, decode, anomaly_map, mask = _linear_world()
    drops = region_drops(mu, [[0, 1], [2, 3]], torch.zeros(4), decode, anomaly_map, mask)
    assert drops.shape == (1, 2)
    assert drops[0, 1].item() == pytest.approx(1.0)  # the whole in-mask anomaly goes away
    assert drops[0, 0].item() == pytest.approx(0.0)  # group 0 paints outside the mask only
    assert explaining_groups(drops.numpy()).tolist() == [1]


def test_partial_reset_and_nothing_to_explain():
    mu, decode, anomaly_map, mask = _linear_world()
    # reference = half the deviation: in-mask residual halves, squared error drops by 3/4
    ref = torch.tensor([0.0, 0.0, 0.5, 0.5])
    drops = region_drops(mu, [[0, 1], [2, 3]], ref, decode, anomaly_map, mask)
    assert drops[0, 1].item() == pytest.approx(0.75)
    empty = region_drops(mu, [[0, 1], [2, 3]], ref, decode, anomaly_map, torch.zeros(1, H, W))
    assert torch.isnan(empty).all()
    assert explaining_groups(empty.numpy()).tolist() == [-1]


def test_head_region_drops_runs_the_heads_rule_map():
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=16, latent_dim=4, hidden=16, likelihood="gaussian")
    model = FactorizedVAE(cfg)
    head = InspectionHead(model.eval(), [[0, 1], [2, 3]], score="l2_max", smooth_sigma=1.0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 1, 16, 16), dtype=np.uint8)
    masks = np.zeros((5, 16, 16), np.uint8)
    masks[:, 4:9, 4:9] = 1
    masks[4] = 0  # nothing to explain
    drops = head_region_drops(head, images, masks, np.zeros(4), batch_size=2)
    assert drops.shape == (5, 2)
    assert np.isfinite(drops[:4]).all() and np.isnan(drops[4]).all()
    # resetting to the image's own mean changes nothing: no drop anywhere
    with torch.no_grad():
        own = model.encode(torch.as_tensor(images[:1], dtype=torch.float32) / 255.0)[0][0]
    same = head_region_drops(head, images[:1], masks[:1], own.numpy())
    assert np.allclose(same, 0.0, atol=1e-5)
    head.tiling = object()  # a tiled head: per-tile codes, no image-level group reset
    with pytest.raises(ValueError, match="tiled"):
        head_region_drops(head, images[:1], masks[:1], np.zeros(4))


def test_best_map_accuracy():
    assert best_map_accuracy(np.array([1, 1, 2, 2]), np.array([0, 0, 1, 1])) == 1.0
    assert best_map_accuracy(np.array([1, 2, 1, 2]), np.array([0, 0, 0, 0])) == 0.5
    assert math.isnan(best_map_accuracy(np.array([], int), np.array([], int)))


def test_permutation_p_is_small_for_aligned_groups_and_uniform_for_random_ones():
    classes = np.repeat([1, 2, 3], 20)
    aligned = class_group_test(classes, classes - 1, n_perm=1000, rng=np.random.default_rng(1))
    assert aligned["p_value"] <= 2 / 1001
    assert aligned["accuracy"] == 1.0 and aligned["nmi"] == pytest.approx(1.0)
    rng = np.random.default_rng(2)
    ps = np.array([
        class_group_test(classes, rng.integers(0, 3, len(classes)), n_perm=400, rng=rng)["p_value"]
        for _ in range(400)
    ])  # fmt: skip
    # under the null p is (nearly) uniform: mean 0.5, about 5% below 0.05
    assert abs(ps.mean() - 0.5) < 0.06
    assert 0.01 <= np.mean(ps <= 0.05) <= 0.11
    assert math.isnan(class_group_test(classes, np.zeros(60, int))["p_value"])


def test_combine_seeds_is_fishers_method():
    assert combine_seeds([0.01, 0.01, 0.01]) < 0.001
    assert combine_seeds([0.5, 0.5, 0.5]) > 0.3
    assert combine_seeds([0.02, math.nan]) == pytest.approx(0.02)
    assert math.isnan(combine_seeds([math.nan]))
