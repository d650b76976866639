"""From a trained candidate to the line: the edge runtime decides as training did.

The sweep calibrated a threshold and scored the test split in torch; the same
candidate exported through `granvae export` and scored by granvae_edge (from
uint8 arrays and from PNG files on disk) must give the same scores and decisions.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from edge_fixtures import DEPLOY  # noqa: F401  (puts deploy/ on sys.path)
from PIL import Image
from typer.testing import CliRunner

from granvae.cli import app
from granvae.config import load_settings
from granvae.data import generate, write_dataset
from granvae.sweep import run_sweep

SETTINGS = {
    "model": {"arch": "conv", "latent_dim": 4, "hidden": 32},
    "train": {"epochs": 2, "batch_size": 32},
    "sweep": {"granularities": [2], "betas": [2.0], "workers": 1},
    "evaluation": {"iwae_k": 2, "iwae_images": 16, "latency_repeats": 2, "disentanglement": False,
                   "score": "fusion",  # the rule that uses every good-image statistic
                   "score_alternatives": []},  # kept, not chosen away (test_feature_knn: the bank)
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("edge-e2e")
    splits, meta = generate("surfaces", 128, 64, 48, seed=3, image_size=32)
    write_dataset(root / "data", splits, meta)
    run_sweep(load_settings(None, SETTINGS), root / "data", root / "sweep", progress=False)
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(root / "sweep"),
            "--out",
            str(root / "bundle"),
            "--candidate",
            "g2-b2-d4-s0",
            "--force",  # 2 epochs may leave no active unit: parity, not quality, is tested
        ],
    )
    assert result.exit_code == 0, result.output
    return root, splits["test"]


def _training_view(root):
    cdir = root / "sweep" / "candidates" / "g2-b2-d4-s0"
    scores = np.load(cdir / "scores.npz")["test_score"]
    threshold = json.loads((cdir / "threshold.json").read_text())["value"]
    return scores, threshold


def test_edge_scores_and_decisions_match_training(exported) -> None:
    from granvae_edge import Inspector

    root, test = exported
    scores, threshold = _training_view(root)
    inspector = Inspector(root / "bundle")
    assert inspector.threshold == pytest.approx(threshold)
    verdicts = inspector.score_batch(test.images.transpose(0, 2, 3, 1))
    edge = np.array([v.score for v in verdicts])
    tolerance = 1e-4 * max(1.0, float(np.median(np.abs(scores))))
    assert np.max(np.abs(edge - scores)) <= tolerance
    clear = np.abs(scores - threshold) > tolerance  # images not sitting on the threshold
    decisions = np.array([v.decision for v in verdicts])
    assert np.array_equal(decisions[clear], (scores > threshold)[clear])


def test_edge_scores_png_files_like_training(exported, tmp_path) -> None:
    from granvae_edge import Inspector

    root, test = exported
    scores, _ = _training_view(root)
    inspector = Inspector(root / "bundle")
    for i in range(5):
        path = tmp_path / f"part-{i}.png"
        Image.fromarray(test.images[i, 0]).save(path)
        assert inspector.score_one(path).score == pytest.approx(scores[i], rel=1e-4)


def test_bundle_carries_the_normalisation_statistics_it_scores_with(exported) -> None:
    """The graph's constants and the shipped score_stats.npz are the candidate's statistics,
    and the manifest names the rule the threshold was calibrated for."""
    from granvae_edge.bundle import sha256_bytes

    root, _ = exported
    manifest = json.loads((root / "bundle" / "manifest.json").read_text())
    assert manifest["scoring"]["rule"] == "fusion" == manifest["threshold"]["score"]
    shipped = root / "bundle" / manifest["scoring"]["stats_file"]
    assert sha256_bytes(shipped.read_bytes()) == manifest["scoring"]["stats_sha256"]
    cdir = root / "sweep" / "candidates" / "g2-b2-d4-s0"
    with np.load(shipped) as got, np.load(cdir / "score_stats.npz") as want:
        for name in want.files:
            np.testing.assert_array_equal(got[name], want[name])
        assert np.all(got["pixel_std"] > 0) and got["latent_precision"].shape == (4, 4)
