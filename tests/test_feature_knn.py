"""``feat_knn`` (granvae.scoring.features): the distance routine is the exact nearest
neighbour, the map finds a foreign patch where it is, and the exported graph scores on the
edge as torch does."""

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
from granvae.scoring.features import BANK_CHUNK, FEATURE_FILE, nearest_distance

SIZE, PERIOD = 32, 4


def test_nearest_distance_is_the_exact_nearest_neighbour_across_bank_chunks() -> None:
    """Brute force with cdist on a bank that spans three chunks, the last one partial, and
    bank rows equal to a feature at each chunk's end (distance exactly 0: taken from the
    difference, not from the expansion, whose float noise the square root would magnify)."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.rand(2, 5, 3, 4, generator=gen)
    bank = torch.rand(2 * BANK_CHUNK + 37, 5, generator=gen) * 2
    bank[BANK_CHUNK - 1] = feats[1, :, 2, 3]  # the last row of the first chunk
    bank[-1] = feats[0, :, 1, 1]  # the last row of the partial last chunk
    bank[BANK_CHUNK + 3] = feats[0, :, 0, 0] + 0.01  # the nearest of (0, 0, 0), in chunk 2
    got = nearest_distance(feats, bank)
    flat = feats.permute(0, 2, 3, 1).reshape(-1, 5)
    want = torch.cdist(flat.double(), bank.double()).min(1).values.reshape(2, 3, 4)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    assert got[1, 2, 3] == 0.0 and got[0, 1, 1] == 0.0
    assert got[0, 0, 0] == pytest.approx(5**0.5 * 0.01, rel=1e-3)


def test_images_scored_in_steps_match_all_at_once(monkeypatch) -> None:
    """Torch scores a large batch a few images at a time (cache-sized blocks); the steps,
    the last one partial, must give each image its own distances in its own place."""
    gen = torch.Generator().manual_seed(1)
    feats = torch.rand(7, 5, 3, 4, generator=gen)
    bank = torch.rand(300, 5, generator=gen)
    whole = nearest_distance(feats, bank)
    monkeypatch.setattr("granvae.scoring.features.POSITIONS_PER_STEP", 24)  # 2 images a step
    stepped = nearest_distance(feats, bank)
    assert stepped.shape == (7, 3, 4)
    torch.testing.assert_close(stepped, whole, rtol=0, atol=0)
    flat = feats.permute(0, 2, 3, 1).reshape(-1, 5)
    want = torch.cdist(flat.double(), bank.double()).min(1).values.reshape(7, 3, 4)
    torch.testing.assert_close(stepped.double(), want, rtol=1e-5, atol=1e-6)


def textures(n: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (n, 1, SIZE, SIZE) crossed stripes of period 4, random phases and contrasts."""
    t = 2 * np.pi * np.arange(SIZE) / PERIOD
    out = []
    for _ in range(n):
        a, b = rng.uniform(0.1, 0.2, 2)
        px, py = rng.uniform(0, 2 * np.pi, 2)
        img = 0.5 + a * np.cos(t + px)[None, :] + b * np.cos(t + py)[:, None]
        out.append(np.clip(np.round(img * 255), 0, 255).astype(np.uint8)[None])
    return np.stack(out)


def conv_model(likelihood: str = "gaussian") -> FactorizedVAE:
    torch.manual_seed(0)  # untrained: first-layer features are still local patch descriptors
    return FactorizedVAE(ModelConfig(image_size=SIZE, latent_dim=4, likelihood=likelihood)).eval()


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    rng = np.random.default_rng(0)
    train, val, good = textures(128, rng), textures(64, rng), textures(8, rng)
    foreign = textures(8, rng)
    centres = []
    for k, img in enumerate(foreign):  # a 6x6 patch of noise at the texture's mean level
        y, x = 4 + 3 * k, 22 - 2 * k
        img[0, y - 3 : y + 3, x - 3 : x + 3] = rng.integers(60, 200, (6, 6))
        centres.append((y - 0.5, x - 0.5))
    head = build_head(conv_model(), make_groups(4, 1), "feat_knn", train)
    root = tmp_path_factory.mktemp("feat-knn")
    head.model.save(root / "model")
    save_head_scoring(head, root)
    return dict(root=root, val=val, good=good, foreign=foreign, centres=centres)


def test_a_foreign_patch_is_flagged_and_found_where_it_is(case) -> None:
    assert (case["root"] / FEATURE_FILE).exists()
    head = load_head(case["root"], 1)
    thr = calibrate_threshold(score_images(head, case["val"])["score"], 0.01).value
    assert (score_images(head, case["good"])["score"] <= thr).all()
    out = score_images(head, case["foreign"])
    assert (out["score"] > thr).all()
    for amap, (cy, cx) in zip(out["anomaly_map"], case["centres"], strict=True):
        y, x = np.unravel_index(np.argmax(amap), amap.shape)
        assert abs(y - cy) <= 3 and abs(x - cx) <= 3, (y, x, cy, cx)


def test_an_mlp_encoder_is_refused_with_the_setting_to_change() -> None:
    model = FactorizedVAE(ModelConfig(arch="mlp", image_size=SIZE, latent_dim=4))
    with pytest.raises(ValueError, match="model.arch: conv"):
        build_head(model, make_groups(4, 1), "feat_knn", textures(4, np.random.default_rng(0)))


def test_the_edge_scores_feat_knn_as_torch(case, tmp_path) -> None:
    """The bank is a constant of the exported graph; granvae_edge (onnxruntime, no torch
    code of ours) gives the torch score and map for every image."""
    from granvae_edge.infer import Inspector

    head = load_head(case["root"], 1)
    images = np.concatenate([case["good"][:4], case["foreign"][:4]])
    torch_out = score_images(head, images)
    threshold = calibrate_threshold(score_images(head, case["val"])["score"], 0.01)
    result = export_candidate(
        case["root"], tmp_path / "bundle", val_images=case["val"][:16], threshold=threshold,
        class_names=["good", "foreign"], data_version="test",
        candidate={"objective": "beta_stcvae", "granularity": 1, "beta": 1.0, "seed": 0},
    )  # fmt: skip
    assert result.parity.passed
    verdicts = Inspector(result.bundle_dir).score_batch([img[0] for img in images])
    np.testing.assert_allclose([v.score for v in verdicts], torch_out["score"], rtol=1e-4,
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(verdicts[-1].anomaly_map, torch_out["anomaly_map"][-1],
                               rtol=1e-3, atol=1e-4)  # fmt: skip
    assert [v.decision for v in verdicts] == [False] * 4 + [True] * 4
