"""Score rules on constructed images: what each rule must see, and must not be fooled by."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from granvae.models import FactorizedVAE, ModelConfig
from granvae.scoring import SCORES, InspectionHead, fit_head, score_all_rules
from granvae.scoring.features import FEATURE_RULES
from granvae.scoring.maps import gaussian_kernel, ssim_map

SIZE = 64  # the working size of the quick profile: 4096 pixels to drown 9 in
GOOD_RANGE = (80.0, 170.0)


class ShrinkingVAE(FactorizedVAE):
    """A VAE that explains a flat part by its brightness, shrunk 10% toward the mean: what
    the KL term does to a real VAE's codes. Global shifts leave a small error everywhere."""

    def __init__(self) -> None:
        super().__init__(ModelConfig(arch="mlp", image_size=SIZE, latent_dim=1, hidden=8,
                                     likelihood="gaussian", obs_std=0.1))  # fmt: skip
        self.centre = float(np.mean(GOOD_RANGE)) / 255.0

    def encode(self, x):
        mu = (x.mean((1, 2, 3)) - self.centre)[:, None] * 10.0
        return mu, torch.full_like(mu, -4.0)

    def decode(self, z):
        level = self.centre + 0.9 * z[:, 0] / 10.0
        return level[:, None, None, None].expand(-1, 1, SIZE, SIZE).contiguous()


def _parts(levels, rng) -> np.ndarray:
    noise = rng.normal(0.0, 3.0, size=(len(levels), 1, SIZE, SIZE))
    return np.clip(np.asarray(levels)[:, None, None, None] + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    good = _parts(rng.uniform(*GOOD_RANGE, size=256), rng)
    head = InspectionHead(ShrinkingVAE(), [[0]], "neg_elbo")
    fit_head(head, good)
    base = _parts([125.0], rng)[0]
    spot = base.copy()
    spot[0, 30:33, 30:33] = np.clip(spot[0, 30:33, 30:33].astype(int) + 70, 0, 255)
    shifted = _parts([GOOD_RANGE[1] - 2.0], rng)[0]  # still a good part, at the range's edge
    return head, np.stack([spot, shifted])


LOCALIZED = ["l2_max", "l2_topk", "nll_max", "ssim_max", "zres_max", "zres_topk", "fusion"]


@pytest.mark.parametrize("rule", LOCALIZED)
def test_small_bright_spot_outscores_a_global_shift_within_the_good_range(setup, rule):
    head, images = setup
    spot, shifted = score_all_rules(head, images)[rule]
    assert spot > shifted


@pytest.mark.parametrize("rule", ["neg_elbo", "recon"])
def test_summed_scores_are_fooled_by_the_global_shift(setup, rule):
    """Why the sum was the wrong default: 9 bright pixels lose to 4096 slightly-off ones."""
    head, images = setup
    spot, shifted = score_all_rules(head, images)[rule]
    assert shifted > spot


def test_every_rule_is_scored_once_statistics_exist(setup):
    """All but the feature rules, which need a conv encoder and a fitted bank (this VAE is
    an MLP; tests/test_feature_knn.py scores them)."""
    head, images = setup
    assert set(score_all_rules(head, images)) == set(SCORES) - FEATURE_RULES


def test_rules_needing_statistics_refuse_to_run_without_them():
    with pytest.raises(ValueError, match="needs statistics"):
        InspectionHead(ShrinkingVAE(), [[0]], "zres_max")


def test_ssim_map_matches_scikit_image():
    """Same window (Gaussian, sigma 1.5, 11 px), constants and population statistics as
    skimage; borders differ only by padding, so compare the interior."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (40, 40))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    _, want = structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)  # fmt: skip
    got = ssim_map(torch.tensor(x, dtype=torch.float32)[None, None],
                   torch.tensor(y, dtype=torch.float32)[None, None],
                   gaussian_kernel(1.5, radius=5))[0].numpy()  # fmt: skip
    np.testing.assert_allclose(got[6:-6, 6:-6], want[6:-6, 6:-6], atol=2e-5)
