"""Tile-density rules (granvae.scoring.density): each catches the defect it is for, and the
exported graph plus the edge's numpy stitching score a part as torch does.

The rule test uses a FactorizedVAE whose weights are set so that it *is* a PCA of a striped
texture (encoder = projection on the texture's 4-d subspace, decoder = its reconstruction):
what each rule must see is then known exactly, not hoped for from a training run.
- a part with the right texture at 3x the contrast: every tile is in the subspace and
  reconstructed exactly (no residual), but its codes lie far from every good code;
- one bright pixel on good texture: its code barely moves, its residual is large.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from edge_fixtures import DEPLOY  # noqa: F401  (puts deploy/ on sys.path)

from granvae.export import export_candidate
from granvae.metrics.thresholds import calibrate_threshold
from granvae.models import FactorizedVAE, ModelConfig
from granvae.objectives import make_groups
from granvae.scoring import build_head, load_head, save_head_scoring, score_images
from granvae.scoring.density import DENSITY_RULES, greedy_coreset
from granvae.scoring.tiling import Tiling

TILE, SIZE, PERIOD = 16, 32, 4
TILING = Tiling(TILE, 8)
OFFSET = 10.0  # keeps the hidden units positive so every ReLU passes its input through


def _basis() -> np.ndarray:
    """(4, 256) orthonormal stripes of period 4 along x and along y (cos and sin)."""
    t = 2 * np.pi * np.arange(TILE) / PERIOD
    rows = []
    for wave in (np.cos(t), np.sin(t)):
        rows.append(np.tile(wave, (TILE, 1)))  # varies along x
        rows.append(np.tile(wave[:, None], (1, TILE)))  # varies along y
    b = np.stack([r.ravel() for r in rows])
    return b / np.linalg.norm(b, axis=1, keepdims=True)


def pca_vae() -> FactorizedVAE:
    """An mlp FactorizedVAE that computes mu = B (x - 0.5), logvar = -4, recon = 0.5 + B^T z."""
    cfg = ModelConfig(arch="mlp", image_size=TILE, latent_dim=4, hidden=16,
                      likelihood="gaussian", obs_std=0.1)  # fmt: skip
    model = FactorizedVAE(cfg)
    b = torch.from_numpy(_basis()).float()
    eye = torch.eye(16)
    with torch.no_grad():
        enc1, _, enc2, _, enc3 = list(model.encoder)[1:]
        enc1.weight.zero_()
        enc1.weight[:4] = b
        enc1.bias.fill_(OFFSET)
        enc1.bias[:4] = OFFSET - 0.5 * b.sum(1)
        enc2.weight.copy_(eye)
        enc2.bias.zero_()
        enc3.weight.zero_()
        enc3.weight[:4, :4] = torch.eye(4)
        enc3.bias.zero_()
        enc3.bias[:4] = -OFFSET
        enc3.bias[4:] = -4.0
        dec1, _, dec2, _, dec3, _ = list(model.decoder)
        dec1.weight.zero_()
        dec1.weight[:4] = torch.eye(4)
        dec1.bias.fill_(OFFSET)
        dec2.weight.copy_(eye)
        dec2.bias.zero_()
        dec3.weight.zero_()
        dec3.weight[:, :4] = b.T
        dec3.bias.copy_(0.5 - OFFSET * b.T.sum(1))
    return model.eval()


def textures(n: int, rng: np.random.Generator, contrast: tuple[float, float]) -> np.ndarray:
    """uint8 (n, 1, SIZE, SIZE): crossed stripes of period 4, random phases and contrasts."""
    t = 2 * np.pi * np.arange(SIZE) / PERIOD
    out = []
    for _ in range(n):
        a, b = rng.uniform(*contrast, 2)
        px, py = rng.uniform(0, 2 * np.pi, 2)
        img = 0.5 + a * np.cos(t + px)[None, :] + b * np.cos(t + py)[:, None]
        out.append(np.clip(np.round(img * 255), 0, 255).astype(np.uint8)[None])
    return np.stack(out)


GOOD = (0.05, 0.10)


@pytest.fixture(scope="module")
def texture_case(tmp_path_factory) -> dict:
    rng = np.random.default_rng(0)
    train, val, good_test = (textures(n, rng, GOOD) for n in (256, 64, 16))
    contrast = textures(8, rng, (0.22, 0.24))  # the right texture, 3x the contrast
    spike = textures(8, rng, GOOD)
    for k, img in enumerate(spike):  # one pixel 80 grey levels brighter
        y, x = 3 + 3 * k, 28 - 3 * k
        img[0, y, x] = min(255, int(img[0, y, x]) + 80)
    head = build_head(pca_vae(), make_groups(4, 1), "tile_fusion", train, tiling=TILING)
    root = tmp_path_factory.mktemp("tile-density")
    head.model.save(root / "model")
    save_head_scoring(head, root)
    return dict(root=root, val=val, good=good_test, contrast=contrast, spike=spike)


def _flagged(case: dict, rule: str, images: np.ndarray) -> np.ndarray:
    """Which images ``rule`` flags at the threshold of 64 good val parts (their maximum).
    A blind rule scores a defect like a good part: it may pass the maximum of 64 good
    scores by chance (about 1 in 65), so "blind" below means at most 1 of 8 flagged."""
    head = load_head(case["root"], 1, rule)
    thr = calibrate_threshold(score_images(head, case["val"])["score"], 0.01).value
    assert (score_images(head, case["good"])["score"] > thr).sum() <= 1, "good parts flagged"
    return score_images(head, images)["score"] > thr


def test_the_code_density_sees_a_texture_the_residual_cannot(texture_case) -> None:
    assert _flagged(texture_case, "tile_knn", texture_case["contrast"]).all()
    assert _flagged(texture_case, "res_max", texture_case["contrast"]).sum() <= 1


def test_the_unsmoothed_residual_sees_a_pixel_the_code_density_cannot(texture_case) -> None:
    assert _flagged(texture_case, "res_max", texture_case["spike"]).all()
    assert _flagged(texture_case, "tile_knn", texture_case["spike"]).sum() <= 1


def test_the_fusion_catches_both(texture_case) -> None:
    both = np.concatenate([texture_case["contrast"], texture_case["spike"]])
    assert _flagged(texture_case, "tile_fusion", both).all()


def test_the_coreset_covers_every_code_within_its_greedy_radius() -> None:
    rng = np.random.default_rng(1)
    codes = np.concatenate([rng.normal(0, 1, (500, 3)), [[30.0, 0, 0]]])  # one rare good code
    keep = greedy_coreset(codes, 40, rng)
    assert len(set(keep.tolist())) == 40 and 500 in keep  # the outlier is kept, not averaged
    d = np.linalg.norm(codes[:, None] - codes[keep][None], axis=2).min(1)
    radius = d.max()
    # greedy k-centre is a 2-approximation: no 40 centres can cover with radius < radius / 2
    rand = np.linalg.norm(codes[:, None] - codes[rng.choice(501, 40)][None], axis=2).min(1)
    assert radius < rand.max()


@pytest.mark.parametrize("rule", sorted(DENSITY_RULES))
def test_the_edge_scores_a_part_as_torch_for_each_density_rule(rule, tmp_path) -> None:
    """A conv tile model, exported with the rule's coreset and moments as graph constants;
    granvae_edge (numpy + onnxruntime) stitches the tiles and takes the max."""
    from granvae_edge.infer import Inspector

    rng = np.random.default_rng(2)
    torch.manual_seed(0)
    model = FactorizedVAE(ModelConfig(image_size=TILE, latent_dim=4, likelihood="gaussian"))
    with torch.no_grad():  # codes that differ between tiles as a trained model's do (O(1))
        list(model.encoder)[-1].weight[:4] *= 300.0
    images = textures(12, rng, GOOD)
    images[8:, :, 10:14, 12:16] = 250  # a few bright blocks
    head = build_head(model.eval(), make_groups(4, 2), rule, images[:4], tiling=TILING)
    cdir = tmp_path / "cand"
    head.model.save(cdir / "model")
    save_head_scoring(head, cdir)
    torch_out = score_images(load_head(cdir, 2), images[4:])
    threshold = calibrate_threshold(torch_out["score"][:4], 0.25)
    result = export_candidate(
        cdir, tmp_path / "bundle", val_images=images[4:8], threshold=threshold,
        class_names=["good", "block"], data_version="test",
        candidate={"objective": "beta_stcvae", "granularity": 2, "beta": 1.0, "seed": 0},
    )  # fmt: skip
    verdicts = Inspector(result.model_path.parent).score_batch([img[0] for img in images[4:]])
    with np.load(result.bundle_dir / "score_stats.npz") as shipped:  # the graph's constants
        np.testing.assert_array_equal(shipped["density_coreset"], head.density_coreset.numpy())
    assert result.manifest["tiling"]["smooth_sigma"] == 0.0
    np.testing.assert_allclose([v.score for v in verdicts], torch_out["score"], rtol=1e-4,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(verdicts[-1].anomaly_map, torch_out["anomaly_map"][-1],
                               rtol=1e-4, atol=1e-5)  # fmt: skip
