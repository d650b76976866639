"""Position statistics travel in the bundle: exported, hashed, verified and applied on the edge.

The torch-free fixture graph (tests/edge_fixtures.py) scores 32-px tiles of a 128-px part;
its stitched maps of good parts give the statistics (granvae.scoring.position), which
granvae.export.bundle ships; the edge's verdict must equal the training-side score of the
same map, and a statistics file that is not the hashed one must be refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from edge_fixtures import build_model, make_bundle, tiling_block
from granvae_edge import Inspector
from granvae_edge.bundle import BundleError
from scipy.ndimage import gaussian_filter

from granvae.export.bundle import POSITION_FILE, write_bundle
from granvae.scoring import position

SIZE = 128


def _parts(rng: np.random.Generator, n: int) -> np.ndarray:
    """uint8 (n, SIZE, SIZE, 1): a bright plate on a dark fixture, shifted up to 6 px."""
    ys, xs = np.indices((SIZE, SIZE))
    out = []
    for _ in range(n):
        dy, dx = rng.integers(-6, 7, 2)
        plate = (np.abs(ys - 64 - dy) < 36) & (np.abs(xs - 64 - dx) < 44)
        image = np.where(plate, 150.0, 30.0) + rng.normal(0, 3.0, (SIZE, SIZE))
        out.append(np.clip(gaussian_filter(image, 0.7), 0, 255))
    return np.stack(out).astype(np.uint8)[..., None]


def _write(tmp_path, name: str, stats_file, tiling: dict):
    import onnx

    model = tmp_path / f"{name}.onnx"
    onnx.save(build_model(32, 32, 1, "uint8"), str(model))
    return write_bundle(
        tmp_path / name, model, groups=[[0], [1], [2], [3]],
        threshold={"value": 3.0, "false_alarm_rate": 0.01, "n_images": 16},
        class_names=["good", "defect"], candidate={"objective": "fixture"},
        data_version="fixture", tiling=tiling, position_path=stats_file,
    )  # fmt: skip


def test_shipped_position_statistics_score_on_the_edge_as_in_training(tmp_path):
    rng = np.random.default_rng(0)
    tiling = tiling_block(32, 32, SIZE)
    plain = Inspector(make_bundle(tmp_path / "plain", tiling=tiling), intra_op_threads=1)
    good, test = _parts(rng, 16), _parts(rng, 4)
    good_maps = np.stack([v.anomaly_map for v in plain.score_batch(list(good))])
    test_maps = np.stack([v.anomaly_map for v in plain.score_batch(list(test))])
    stats = position.fit(good.transpose(0, 3, 1, 2), good_maps, register=True, dilate=1)
    stats.save(tmp_path / "stats.npz")

    manifest = _write(tmp_path, "bundle", tmp_path / "stats.npz", tiling)
    assert manifest["position"]["file"] == POSITION_FILE
    inspector = Inspector(tmp_path / "bundle", intra_op_threads=1)
    expected, z = position.apply(stats, test.transpose(0, 3, 1, 2), test_maps)
    verdicts = inspector.score_batch(list(test))
    for verdict, want, want_z in zip(verdicts, expected, z, strict=True):
        assert verdict.score == pytest.approx(float(want), rel=0.02, abs=1e-3)
        assert verdict.decision == (verdict.score > 3.0)
        assert np.abs(verdict.anomaly_map - want_z).max() <= 0.05 * np.abs(want_z).max()
    # what the plain bundle scores is not what the position bundle scores
    assert not np.allclose([v.score for v in verdicts],
                           [v.score for v in plain.score_batch(list(test))])  # fmt: skip

    (tmp_path / "bundle" / POSITION_FILE).write_bytes(b"not the hashed statistics")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        Inspector(tmp_path / "bundle", intra_op_threads=1)


def test_position_statistics_need_a_tiled_bundle(tmp_path):
    position.PositionStats(np.zeros((4, 4)), np.zeros((4, 4)), np.ones((4, 4))).save(
        tmp_path / "s.npz"
    )
    with pytest.raises(ValueError, match="position_path is set but tiling is not"):
        _write(tmp_path, "b", tmp_path / "s.npz", None)
