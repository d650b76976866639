"""A 512 x 512 part with a 6-px defect, the case tiles exist for.

A model trained on 64-px tiles of 512-px parts must put the stitched map's peak on a
6-px spot and flag the part at the threshold calibrated on good parts; the same parts
resized to 64 px (the whole-image path) are scored beside it by a whole-image model
trained for as many steps, and both figures are recorded. The exported tile graph then
scores full-size parts as torch does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from granvae.data.surfaces import Surfaces
from granvae.export import export_candidate, make_session
from granvae.export.tiled import onnx_tiled_scores
from granvae.metrics.thresholds import calibrate_threshold
from granvae.models import FactorizedVAE, ModelConfig
from granvae.objectives import ObjectiveConfig, make_groups
from granvae.scoring import build_head, save_head_scoring, score_images
from granvae.scoring.tiling import TilingConfig
from granvae.train import TrainConfig, train

SIZE, TILE = 512, 64
SPOTS = [(200, 300), (320, 180), (256, 256), (150, 150)]  # (y, x) of each test part's defect
SPOT_RADIUS = 3  # a disk 6-7 px across
SPOT_DEPTH = 100  # grey levels darker than the surface
GROUPS = make_groups(10, 2)


def _parts(n: int, rng: np.random.Generator) -> np.ndarray:
    """Centred machined plates rendered at 768 px and cut to their 512-px middle: a camera
    framing the surface (texture, streaks, sensor noise; no fixture edge)."""
    source = Surfaces(768)
    factors = source.sample_factors(n, rng)
    factors[:, 3:5] = 1  # offset index 1 = centred
    images = source.sample_observations_from_factors(factors, rng)
    return np.ascontiguousarray(images[:, :, 128:640, 128:640])


def _with_spots(parts: np.ndarray) -> np.ndarray:
    out = parts.copy()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for img, (cy, cx) in zip(out, SPOTS, strict=True):
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= SPOT_RADIUS**2
        img[0][disk] = np.clip(img[0][disk].astype(int) - SPOT_DEPTH, 0, 255)
    return out


def _resized(images: np.ndarray, size: int) -> np.ndarray:
    """What `granvae data import --image-size 64` does to a part (bilinear)."""
    return np.stack([
        np.asarray(Image.fromarray(img[0]).resize((size, size), Image.Resampling.BILINEAR))[None]
        for img in images
    ])  # fmt: skip


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tiled-part")
    rng = np.random.default_rng(0)
    good = _parts(36, rng)
    train_x, val_x = good[:24], good[24:]
    test_x = _with_spots(_parts(len(SPOTS), rng))
    tiling = TilingConfig(tile=TILE, stride=TILE // 2, tiles_per_image=32)
    objective = ObjectiveConfig(name="beta_stcvae", beta=1.0, granularity=2)
    cfg = TrainConfig(epochs=12, batch_size=64, seed=0)
    result = train(train_x, ModelConfig(image_size=TILE), objective, cfg, root / "cand",
                   progress=False, tiling=tiling)  # fmt: skip
    assert result.status == "finished"
    model = FactorizedVAE.load(root / "cand" / "model").eval()
    head = build_head(model, GROUPS, "l2_max", train_x, tiling=tiling.geometry())
    save_head_scoring(head, root / "cand")
    val = score_images(head, val_x)
    threshold = calibrate_threshold(val["score"], 0.01)
    out = score_images(head, test_x)
    return dict(root=root, head=head, train=train_x, val=val_x, test=test_x,
                threshold=threshold, out=out, objective=objective)  # fmt: skip


def test_the_stitched_map_peaks_on_a_6px_defect_and_flags_the_part(part, record_property) -> None:
    out, thr = part["out"], part["threshold"].value
    assert out["anomaly_map"].shape == (len(SPOTS), SIZE, SIZE)
    for amap, score, (cy, cx) in zip(out["anomaly_map"], out["score"], SPOTS, strict=True):
        py, px = np.unravel_index(np.argmax(amap), amap.shape)
        assert np.hypot(py - cy, px - cx) <= 4, f"peak at {(py, px)}, defect at {(cy, cx)}"
        assert score > thr
    record_property("tiled_scores_over_threshold", (out["score"] / thr).round(2).tolist())


def test_the_resized_path_is_measured_beside_it(part, record_property, tmp_path) -> None:
    """Same parts at 64 px, a whole-image model trained for the same number of steps."""
    small = {k: _resized(part[k], TILE) for k in ("train", "val", "test")}
    cfg = TrainConfig(epochs=48, batch_size=8, seed=0)  # 24 images: 3 steps x 48 = 144
    train(small["train"], ModelConfig(image_size=TILE), part["objective"], cfg, tmp_path,
          progress=False)  # fmt: skip
    model = FactorizedVAE.load(tmp_path / "model").eval()
    head = build_head(model, GROUPS, "l2_max", small["train"])
    thr = calibrate_threshold(score_images(head, small["val"])["score"], 0.01).value
    out = score_images(head, small["test"])
    scale = SIZE / TILE
    errors = []
    for amap, (cy, cx) in zip(out["anomaly_map"], SPOTS, strict=True):
        py, px = np.unravel_index(np.argmax(amap), amap.shape)
        errors.append(float(np.hypot((py + 0.5) * scale - cy, (px + 0.5) * scale - cx)))
    record_property("resized_flagged", int((out["score"] > thr).sum()))
    record_property("resized_peak_error_px", [round(e, 1) for e in errors])
    tiled_flagged = int((part["out"]["score"] > part["threshold"].value).sum())
    assert tiled_flagged >= int((out["score"] > thr).sum())


def test_the_exported_tile_graph_scores_full_size_parts_as_torch(part, tmp_path) -> None:
    result = export_candidate(
        part["root"] / "cand", tmp_path / "bundle", val_images=part["val"],
        threshold=part["threshold"], class_names=["good", "spot"], data_version="test",
        candidate={"objective": "beta_stcvae", "granularity": 2, "beta": 1.0, "seed": 0},
    )  # fmt: skip
    manifest = json.loads(Path(result.manifest_path).read_text())
    block = manifest["tiling"]
    assert block == {"tile": TILE, "stride": TILE // 2, "image_height": SIZE, "image_width": SIZE,
                     "map": "l2", "smooth_sigma": 2.0, "reduce": "max"}  # fmt: skip
    assert manifest["input"]["height"] == manifest["input"]["width"] == TILE
    scores = onnx_tiled_scores(make_session(result.model_path, 1), part["test"], block)
    np.testing.assert_allclose(scores, part["out"]["score"], rtol=1e-4)
    assert (
        (scores > manifest["threshold"]["value"])
        == (part["out"]["score"] > part["threshold"].value)
    ).all()
