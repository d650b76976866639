"""Tiled bundles on the edge: full-size images in, a stitched full-size map and one verdict out.

The graph is a real granvae export (a 64x64 InspectionHead, rule l2_max) with a manifest
``tiling`` block: the edge stitches whatever per-tile map the graph emits, so today's
whole-image head stands in for the tiled head. The reference verdict is recomputed in torch
(the head on each tile, torch stitching, training's smooth_map), independent of the numpy code.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from edge_fixtures import (
    http,
    make_bundle,
    make_manifest,
    png_bytes,
    run_cli,
    running_server,
    sha256_file,
    tiling_block,
)
from granvae_edge import InputError, Inspector, ManifestError, validate_manifest
from PIL import Image

from granvae.export import export_onnx
from granvae.models import FactorizedVAE, ModelConfig
from granvae.objectives import make_groups
from granvae.scoring import InspectionHead, maps

TILE, SIZE = 64, 512


def _part(seed: int, size: int = SIZE) -> np.ndarray:
    """A lit plate with texture and a small bright defect."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 90 + 60 * xx + 20 * np.sin(12 * yy) + rng.normal(0, 6, (size, size))
    img[300:306, 200:206] = 250
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def head() -> InspectionHead:
    torch.manual_seed(0)
    cfg = ModelConfig(arch="conv", image_size=TILE, latent_dim=4, likelihood="gaussian")
    return InspectionHead(FactorizedVAE(cfg), make_groups(4, 2), score="l2_max").eval()


@pytest.fixture(scope="module")
def onnx_file(head, tmp_path_factory):
    return export_onnx(head, tmp_path_factory.mktemp("tiled-graph") / "model.onnx")


def _bundle(directory, onnx_file, resize="bilinear", threshold=1e9, **tiling):
    """A tiled bundle around the exported graph; non-overlapping tiles unless ``stride``."""
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(onnx_file.read_bytes())
    manifest = make_manifest(sha256_file(onnx_file), TILE, TILE, 1, threshold, resize)
    manifest["groups"] = [[0, 1], [2, 3]]
    manifest["tiling"] = tiling_block(TILE, TILE, SIZE) | tiling
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture(scope="module")
def inspector(onnx_file, tmp_path_factory):
    return Inspector(_bundle(tmp_path_factory.mktemp("tiled") / "b", onnx_file), intra_op_threads=1)


def _stub(directory, onnx_file, **kwargs) -> Inspector:
    """An Inspector without the load-time smoke run (a tiled smoke run scores a whole image)."""
    return Inspector(_bundle(directory, onnx_file, **kwargs), intra_op_threads=1, smoke_test=False)


def _torch_reference(head, image: np.ndarray, stride: int, sigma: float) -> dict:
    """The contract computed with torch: tiles through the head, mean stitch, smooth_map, max."""
    ys = list(range(0, SIZE - TILE + 1, stride))
    ys += [SIZE - TILE] if ys[-1] != SIZE - TILE else []
    origins = [(y, x) for y in ys for x in ys]
    tiles = torch.from_numpy(np.stack([image[y : y + TILE, x : x + TILE] for y, x in origins]))
    with torch.no_grad():
        out = head(tiles[..., None])
    canvas, count = torch.zeros(SIZE, SIZE), torch.zeros(SIZE, SIZE)
    for m, (y, x) in zip(out.anomaly_map, origins, strict=True):
        canvas[y : y + TILE, x : x + TILE] += m
        count[y : y + TILE, x : x + TILE] += 1
    smoothed = maps.smooth_map((canvas / count)[None], maps.gaussian_kernel(sigma))[0]
    py, px = np.unravel_index(int(torch.argmax(smoothed)), smoothed.shape)
    covering = [k for k, (y, x) in enumerate(origins)
                if y <= py < y + TILE and x <= px < x + TILE]  # fmt: skip
    best = max(covering, key=lambda k: (float(out.anomaly_map[k][py - origins[k][0],
                                                                 px - origins[k][1]]), -k))
    return {"score": float(smoothed.max()), "map": smoothed.numpy(),
            "top_group": int(torch.argmax(out.group_attribution[best]))}  # fmt: skip


def test_tiled_verdict_matches_the_torch_reference(onnx_file, head, tmp_path):
    image = _part(0)
    # Stride 48 overlaps tiles and does not divide 512 - 64: the border tile is the extra one.
    verdict = _stub(tmp_path / "s48", onnx_file, stride=48).score_one(image)
    ref = _torch_reference(head, image, stride=48, sigma=2.0)
    assert verdict.anomaly_map.shape == (SIZE, SIZE)
    assert verdict.score == pytest.approx(ref["score"], rel=1e-4)
    np.testing.assert_allclose(verdict.anomaly_map, ref["map"], rtol=1e-3, atol=1e-5)
    assert verdict.top_group == ref["top_group"]
    peak = np.unravel_index(np.argmax(verdict.anomaly_map), verdict.anomaly_map.shape)
    assert 290 <= peak[0] <= 316 and 190 <= peak[1] <= 216  # the map peaks at the defect


def test_array_png_file_and_bytes_score_identically(inspector, tmp_path):
    image = _part(1)
    path = tmp_path / "part.png"
    Image.fromarray(image).save(path)
    verdicts = [inspector.score_one(x) for x in (image, path, path.read_bytes())]
    for v in verdicts[1:]:
        assert v.score == verdicts[0].score and v.decision == verdicts[0].decision
        assert np.array_equal(v.anomaly_map, verdicts[0].anomaly_map)
    assert verdicts[0].anomaly_map.shape == (SIZE, SIZE)


def test_decision_uses_the_stitched_score_and_the_manifest_threshold(inspector, onnx_file,
                                                                   tmp_path):  # fmt: skip
    image = _part(2)
    probe = inspector.score_one(image)
    low = _stub(tmp_path / "b", onnx_file, threshold=probe.score * 0.999)
    high = _stub(tmp_path / "c", onnx_file, threshold=probe.score * 1.001)
    assert low.score_one(image).decision and not high.score_one(image).decision


def test_topk_reduce_is_the_mean_of_the_largest_map_values(onnx_file, tmp_path):
    insp = _stub(tmp_path / "k", onnx_file, reduce="topk", topk=100)
    verdict = insp.score_one(_part(3))
    top = np.sort(verdict.anomaly_map.ravel())[-100:]
    assert verdict.score == pytest.approx(float(top.mean()), rel=1e-5)
    assert verdict.score < float(verdict.anomaly_map.max())


def test_other_sizes_are_resized_or_refused_naming_the_sizes(inspector, onnx_file, tmp_path):
    odd = _part(4, size=700)[:, :600]
    assert inspector.score_one(odd).anomaly_map.shape == (SIZE, SIZE)
    strict = _stub(tmp_path / "n", onnx_file, resize="none")
    with pytest.raises(InputError, match="600x700 but the model takes 512x512"):
        strict.score_one(odd)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"tile": 32}, "tiling.tile"),
        ({"stride": 0}, "tiling.stride"),
        ({"stride": 65}, "tiling.stride"),
        ({"stride": 2.5}, "tiling.stride"),
        ({"image_height": 40}, "tiling.image_height"),
        ({"image_width": True}, "tiling.image_width"),
        ({"smooth_sigma": -1.0}, "tiling.smooth_sigma"),
        ({"smooth_sigma": 200.0}, "tiling.smooth_sigma"),  # kernel wider than the image
        ({"reduce": "mean"}, "tiling.reduce"),
        ({"reduce": "topk"}, "tiling.topk"),
        ({"reduce": "topk", "topk": 0}, "tiling.topk"),
        ({"reduce": "topk", "topk": SIZE * SIZE + 1}, "tiling.topk"),
        ({"map": 3}, "tiling.map"),
    ],
)
def test_tiling_block_errors_name_the_field(edit, field):
    manifest = make_manifest("0" * 64, TILE, TILE, 1, 1.0, "bilinear")
    manifest["tiling"] = tiling_block(TILE, 32, SIZE) | edit
    with pytest.raises(ManifestError, match=f"'{field}'"):
        validate_manifest(manifest)


def test_tiling_block_missing_field_and_wrong_type_are_named():
    manifest = make_manifest("0" * 64, TILE, TILE, 1, 1.0, "bilinear")
    block = tiling_block(TILE, 32, SIZE)
    del block["image_width"]
    manifest["tiling"] = block
    with pytest.raises(ManifestError, match="'tiling.image_width' is missing"):
        validate_manifest(manifest)
    manifest["tiling"] = [64]
    with pytest.raises(ManifestError, match="'tiling' must be dict"):
        validate_manifest(manifest)


# Serving and the CLI on a torch-free fixture graph (32 px tiles, 512 px working resolution).


@pytest.fixture(scope="module")
def fixture_bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("tiled-fixture") / "b",
                       tiling=tiling_block(32, 32, SIZE))  # fmt: skip


def test_server_scores_full_size_images_up_to_2048(fixture_bundle):
    big = png_bytes(_part(5, size=2048))
    expected = Inspector(fixture_bundle, intra_op_threads=1).score_one(big).score
    with running_server(fixture_bundle, max_bytes=16 << 20) as (url, _):
        code, body = http("POST", url + "/score", big, timeout=60)
    assert code == 200, body
    assert body["score"] == pytest.approx(expected, rel=1e-6)


def test_cli_scores_a_folder_and_calibrates_a_tiled_bundle(fixture_bundle, tmp_path):
    folder = tmp_path / "good"
    folder.mkdir()
    for i, size in enumerate((512, 700, 300)):
        Image.fromarray(_part(10 + i, size=size)).save(folder / f"p{i}.png")
    heat = tmp_path / "heat"
    scored = run_cli("score", "--bundle", str(fixture_bundle), "--heatmaps", str(heat),
                     str(folder))  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    lines = [json.loads(line) for line in scored.stdout.splitlines()]
    assert len(lines) == 3 and all(isinstance(line["score"], float) for line in lines)
    assert Image.open(lines[1]["heatmap"]).size == (SIZE, SIZE)
    bundle = tmp_path / "bundle"
    shutil.copytree(fixture_bundle, bundle)
    calibrated = run_cli("calibrate", "--bundle", str(bundle), "--good-images", str(folder),
                         "--false-alarm-rate", "0.5")  # fmt: skip
    assert calibrated.returncode == 0, calibrated.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["revision"] == 2 and manifest["tiling"] == tiling_block(32, 32, SIZE)
    assert manifest["threshold"]["value"] in sorted(line["score"] for line in lines)
