"""Full-resolution parts end to end: an MVTec-style folder of 128-px parts is imported at its
own size, a tiled sweep trains and evaluates on it, `granvae export` ships the tile graph,
and granvae_edge scores the folder's PNG files and the arrays at full size, as training did.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from edge_fixtures import DEPLOY  # noqa: F401  (puts deploy/ on sys.path)
from typer.testing import CliRunner

from granvae.cli import app
from granvae.data import generate, load_dataset
from granvae.data.to_folder import write_mvtec
from granvae.scoring import load_head, score_images

SIZE, TILE, STRIDE = 128, 32, 24  # a stride that does not divide 128 - 32
CANDIDATE = "g2-b2-d4-s0"
PARAMS = {
    "model": {"latent_dim": 4, "hidden": 32},
    "train": {"epochs": 2, "batch_size": 32},
    "tiling": {"tile": TILE, "stride": STRIDE, "tiles_per_image": 4},
    "sweep": {"granularities": [2], "betas": [2.0], "seeds": [0], "workers": 1},
    "evaluation": {"iwae_k": 2, "iwae_images": 16, "latency_repeats": 2, "bootstrap": 100},
    "select": {"gates": [{"metric": "status", "op": "==", "value": "finished"}]},
}


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiled-e2e")
    splits, meta = generate("surfaces", 64, 24, 16, seed=2, image_size=SIZE, defect_px=10)
    write_mvtec(root / "folder", splits, meta)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    _invoke("data", "import", str(root / "folder"), "--out", str(root / "data"))
    _invoke("sweep", "--data", str(root / "data"), "--out", str(root / "sweep"),
            "--params", str(root / "params.yaml"))  # fmt: skip
    _invoke("export", str(root / "sweep"), "--out", str(root / "bundle"),
            "--candidate", CANDIDATE, "--params", str(root / "params.yaml"))  # fmt: skip
    return root


def test_the_import_keeps_the_parts_full_size_and_the_bundle_says_how_to_tile(shipped) -> None:
    splits, meta = load_dataset(shipped / "data")
    assert meta.observation_shape == (1, SIZE, SIZE)
    manifest = json.loads((shipped / "bundle" / "manifest.json").read_text())
    assert manifest["input"]["height"] == TILE
    tiling = manifest["tiling"]
    assert (tiling["tile"], tiling["stride"], tiling["image_height"]) == (TILE, STRIDE, SIZE)
    evaluation = json.loads(
        (shipped / "sweep" / "candidates" / CANDIDATE / "evaluation.json").read_text()
    )
    assert 0.0 <= evaluation["pixel_auroc"] <= 1.0  # pixel metrics on full-size maps


def test_the_edge_scores_full_size_files_and_arrays_as_training_did(shipped) -> None:
    from granvae_edge.infer import Inspector

    splits, _ = load_dataset(shipped / "data")
    test = splits["test"]
    cdir = shipped / "sweep" / "candidates" / CANDIDATE
    torch_out = score_images(load_head(cdir, 2), test.images)
    threshold = json.loads((cdir / "threshold.json").read_text())["value"]
    inspector = Inspector(shipped / "bundle")
    files = [shipped / "folder" / name for name in test.names]
    from_files = [inspector.score_one(path) for path in files]
    from_arrays = inspector.score_batch([img[0] for img in test.images])
    for verdicts in (from_files, from_arrays):
        scores = np.array([v.score for v in verdicts])
        np.testing.assert_allclose(scores, torch_out["score"], rtol=1e-4, atol=1e-7)
        assert [v.decision for v in verdicts] == list(torch_out["score"] > threshold)
        assert verdicts[0].anomaly_map.shape == (SIZE, SIZE)
        np.testing.assert_allclose(
            verdicts[0].anomaly_map, torch_out["anomaly_map"][0], rtol=1e-4, atol=1e-6
        )
