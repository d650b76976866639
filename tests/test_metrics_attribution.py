"""Group attribution: constructed class/group structure, chance level, the reset counterfactual."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from granvae.metrics.attribution import (
    attribution_table,
    compute_attribution,
    kl_attribution,
    mean_latent,
    nmi,
    reset_attribution,
    score_at_latent,
)
from granvae.models import FactorizedVAE, ModelConfig, to_unit
from granvae.objectives import make_groups
from granvae.scoring import InspectionHead, score_images

CLASSES = ("good", "blob", "scratch", "crack")


def constructed(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Group 1 is large on every image; blob peaks in group 0, scratch in group 2; no cracks."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], [40, 30, 30])
    attr = rng.normal(0.0, 0.1, size=(100, 3)) + np.array([0.0, 5.0, 0.0])
    attr[labels == 1, 0] += 1.0
    attr[labels == 2, 2] += 1.0
    return attr, labels


def test_constructed_classes_land_on_their_groups() -> None:
    attr, labels = constructed()
    m = compute_attribution(attr, labels, CLASSES, rng=np.random.default_rng(1), n_perm=200)
    assert m["attribution_top_group_blob"] == 0.0
    assert m["attribution_top_group_scratch"] == 2.0
    assert m["attribution_top_share_blob"] == m["attribution_top_share_scratch"] == 1.0
    assert m["attribution_class_group_nmi"] == pytest.approx(1.0)
    assert m["attribution_cramers_v"] == pytest.approx(1.0)
    assert m["attribution_pvalue"] == pytest.approx(1 / 201)  # no shuffle reaches it
    assert math.isnan(m["attribution_top_group_crack"])  # stable schema, no images
    assert all(type(v) is float for v in m.values())


def test_without_centring_the_always_large_group_would_win() -> None:
    """A good reference whose group 1 is small makes group 1 the top of every defect."""
    attr, labels = constructed()
    m = compute_attribution(attr, labels, CLASSES, good_reference_attr=np.zeros((5, 3)), n_perm=50)
    assert m["attribution_top_group_blob"] == m["attribution_top_group_scratch"] == 1.0
    assert math.isnan(m["attribution_class_group_nmi"])  # one top group: nothing to separate


def test_random_attributions_are_at_chance() -> None:
    rng = np.random.default_rng(2)
    attr, labels = rng.normal(size=(300, 4)), rng.integers(0, 4, size=300)
    m = compute_attribution(attr, labels, CLASSES, rng=np.random.default_rng(3), n_perm=300)
    assert m["attribution_pvalue"] > 0.05
    assert m["attribution_class_group_nmi"] < 0.05
    assert m["attribution_n_defect"] == float(np.sum(labels > 0))


def test_nmi_matches_sklearn() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 3, 80), rng.integers(0, 5, 80)
    b[:40] = a[:40]
    assert nmi(a, b) == pytest.approx(normalized_mutual_info_score(a, b))
    assert math.isnan(nmi(a, np.zeros_like(a)))


def test_table_counts_every_defect_image_once() -> None:
    attr, labels = constructed()
    rows = attribution_table(attr, labels, CLASSES)
    assert [r["class"] for r in rows] == ["blob", "scratch", "crack"]
    assert rows[0] == {"class": "blob", "n": 30, "group_0": 30, "group_1": 0, "group_2": 0}
    assert rows[1]["group_2"] == 30 and rows[2]["n"] == 0


# ------------------------------------------------------------- on a tiny model


@pytest.fixture(scope="module")
def tiny() -> tuple[FactorizedVAE, np.ndarray]:
    torch.manual_seed(0)
    model = FactorizedVAE(ModelConfig(arch="mlp", image_size=16, latent_dim=5, hidden=32))
    images = np.random.default_rng(5).integers(0, 256, size=(12, 1, 16, 16), dtype=np.uint8)
    return model.eval(), images


def test_reset_attribution_shape_and_own_mean_is_zero(tiny) -> None:
    model, images = tiny
    groups = make_groups(5, 2)  # sizes 2, 2, 1
    good_mean = mean_latent(model, images[:6])
    drop = reset_attribution(model, images, groups, good_mean, batch_size=5)
    assert drop.shape == (12, 3) and np.all(np.isfinite(drop)) and np.any(drop != 0)
    with torch.no_grad():
        own_mu = model.encode(to_unit(images))[0].numpy()
    own = reset_attribution(model, images, groups, own_mu, batch_size=5)
    np.testing.assert_allclose(own, 0.0, atol=1e-4)


def test_score_at_latent_is_the_head_score(tiny) -> None:
    model, images = tiny
    head = score_images(InspectionHead(model, make_groups(5, 2)), images)
    with torch.no_grad():
        x = to_unit(images)
        mu, logvar = model.encode(x)
        ours = score_at_latent(model, x, mu, logvar).numpy()
    np.testing.assert_allclose(ours, head["score"], rtol=1e-5)
    kl = kl_attribution(model, images, make_groups(5, 2))
    assert kl.shape == (12, 3) and np.all(kl >= 0)
