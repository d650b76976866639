"""Tile geometry, stitching and tiled scoring, checked against references built another way.

The stitch is compared with a per-pixel brute force (every tile that covers a pixel, found
by testing each tile's rectangle), so an off-by-one origin, a missed border tile or a sum
instead of a mean shows up; tiled scoring with one tile the size of the part must give
exactly the whole-image head's score and map.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from granvae.models import FactorizedVAE, ModelConfig
from granvae.objectives import ObjectiveConfig, make_groups
from granvae.scoring import InspectionHead, score_images
from granvae.scoring.tiled import score_tiled
from granvae.scoring.tiling import Tiling, TilingConfig, extract_tiles, random_tiles, stitch
from granvae.train import TrainConfig, train

# (size, tile, stride): strides that divide size - tile and strides that do not
GEOMETRIES = [(512, 64, 64), (512, 64, 32), (512, 64, 48), (100, 64, 30), (96, 32, 7)]


@pytest.mark.parametrize(("size", "tile", "stride"), GEOMETRIES)
def test_origins_cover_the_part_up_to_its_border(size, tile, stride) -> None:
    origins = Tiling(tile, stride).origins(size)
    assert origins[0] == 0 and origins[-1] == size - tile
    gaps = np.diff(origins)
    assert (gaps >= 1).all() and (gaps <= stride).all()
    assert (gaps[:-1] == stride).all()  # only the last step may be shorter


@pytest.mark.parametrize(("size", "tile", "stride"), GEOMETRIES)
def test_a_constant_map_stitches_to_the_same_constant(size, tile, stride) -> None:
    tiling = Tiling(tile, stride)
    n_tiles = len(tiling.grid(size, size + 8))
    maps = torch.full((2, n_tiles, tile, tile), 3.25)
    out = stitch(maps, tiling, size, size + 8)
    assert out.shape == (2, size, size + 8)
    assert torch.allclose(out, torch.full_like(out, 3.25), rtol=0, atol=1e-6)


def _brute_force_stitch(maps: np.ndarray, grid: list, tile: int, h: int, w: int) -> np.ndarray:
    out = np.zeros((h, w))
    for py in range(h):
        for px in range(w):
            values = [
                maps[k, py - y, px - x]
                for k, (y, x) in enumerate(grid)
                if y <= py < y + tile and x <= px < x + tile
            ]
            out[py, px] = np.mean(values)
    return out


@pytest.mark.parametrize(("h", "w", "tile", "stride"), [(40, 52, 16, 16), (40, 52, 16, 10)])
def test_stitch_is_the_mean_of_the_tiles_covering_each_pixel(h, w, tile, stride) -> None:
    tiling = Tiling(tile, stride)
    grid = tiling.grid(h, w)
    maps = np.random.default_rng(0).normal(size=(len(grid), tile, tile))
    got = stitch(torch.from_numpy(maps)[None], tiling, h, w)[0].numpy()
    np.testing.assert_allclose(got, _brute_force_stitch(maps, grid, tile, h, w), atol=1e-12)


def test_extracted_tiles_are_the_grid_crops_in_row_major_order() -> None:
    images = np.random.default_rng(1).integers(0, 256, (2, 1, 40, 52), dtype=np.uint8)
    tiling = Tiling(16, 10)
    tiles = extract_tiles(images, tiling)
    grid = tiling.grid(40, 52)
    assert tiles.shape == (2, len(grid), 1, 16, 16)
    assert grid[1] == (0, 10) and grid[-1] == (24, 36)
    for k, (y, x) in enumerate(grid):
        np.testing.assert_array_equal(tiles[:, k], images[:, :, y : y + 16, x : x + 16])


def test_random_tiles_are_crops_of_their_own_image() -> None:
    images = torch.from_numpy(
        np.random.default_rng(2).integers(0, 256, (3, 1, 48, 48), dtype=np.uint8)
    )
    tiles = random_tiles(images, 16, 5, torch.Generator().manual_seed(0))
    assert tiles.shape == (15, 1, 16, 16)
    for i, t in enumerate(tiles):
        source = images[i // 5, 0].numpy()
        windows = np.lib.stride_tricks.sliding_window_view(source, (16, 16))
        assert (windows == t[0].numpy()).all(axis=(-2, -1)).any()
    again = random_tiles(images, 16, 5, torch.Generator().manual_seed(1))
    assert not torch.equal(tiles, again)


def test_a_stride_without_a_tile_and_a_tile_larger_than_the_part_are_refused() -> None:
    with pytest.raises(ValueError, match="tiling.stride is set but tiling.tile is null"):
        TilingConfig(stride=8)
    with pytest.raises(ValueError, match="stride 40 > tile 32 would leave pixels"):
        TilingConfig(tile=32, stride=40)
    with pytest.raises(ValueError, match="tile 64 px is larger than the image side 48 px"):
        Tiling(64, 32).grid(48, 48)


@pytest.fixture(scope="module")
def model() -> FactorizedVAE:
    torch.manual_seed(0)
    return FactorizedVAE(ModelConfig(image_size=32, latent_dim=4, hidden=32)).eval()


@pytest.mark.parametrize("rule", ["l2_max", "l2_topk", "ssim_max", "nll_max"])
def test_one_tile_the_size_of_the_part_scores_as_the_whole_image_head(model, rule) -> None:
    images = np.random.default_rng(3).integers(0, 256, (5, 1, 32, 32), dtype=np.uint8)
    groups = make_groups(4, 2)
    whole = score_images(InspectionHead(model, groups, rule), images)
    tiled = score_tiled(InspectionHead(model, groups, rule, tiling=Tiling(32, 32)), images)
    np.testing.assert_allclose(tiled["score"], whole["score"], rtol=1e-5)
    np.testing.assert_allclose(tiled["anomaly_map"], whole["anomaly_map"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(tiled["group_attribution"], whole["group_attribution"], rtol=1e-5)


def test_tiled_scores_come_from_the_stitched_full_size_map(model) -> None:
    images = np.random.default_rng(4).integers(0, 256, (3, 1, 80, 72), dtype=np.uint8)
    head = InspectionHead(model, make_groups(4, 2), "l2_topk", tiling=Tiling(32, 20))
    out = score_tiled(head, images, batch_size=7)  # batches that split an image's tiles
    assert out["anomaly_map"].shape == (3, 80, 72)
    k = round(0.01 * 80 * 72)
    top = np.sort(out["anomaly_map"].reshape(3, -1), axis=1)[:, -k:].mean(1)
    np.testing.assert_allclose(out["score"], top, rtol=1e-6)
    # the reported latents are those of the tile under the stitched map's maximum (the pixel
    # that decided the score); of the tiles covering it, the one with the largest raw value there
    tiles = extract_tiles(images, head.tiling).reshape(-1, 1, 32, 32)
    per_tile = score_images(InspectionHead(model, make_groups(4, 2), "l2_max"), tiles)
    grid = head.tiling.grid(80, 72)
    nhwc = tiles.reshape(3, len(grid), 1, 32, 32).transpose(0, 1, 3, 4, 2)
    raw = [head.tile_outputs(torch.from_numpy(t.copy())).anomaly_map.detach().numpy() for t in nhwc]
    best = []
    for i in range(3):
        py, px = np.unravel_index(np.argmax(out["anomaly_map"][i]), (80, 72))
        covering = {k: raw[i][k, py - y, px - x] for k, (y, x) in enumerate(grid)
                    if y <= py < y + 32 and x <= px < x + 32}  # fmt: skip
        best.append(max(covering, key=lambda k: (covering[k], -k)))
    mu = per_tile["latent_mean"].reshape(3, len(grid), -1)
    np.testing.assert_allclose(out["latent_mean"], mu[np.arange(3), best], rtol=1e-5, atol=1e-6)


def test_rules_without_a_map_cannot_tile(model) -> None:
    head = InspectionHead(model, make_groups(4, 2), "neg_elbo", tiling=Tiling(32, 32))
    with pytest.raises(ValueError, match="'neg_elbo' cannot score tiles"):
        score_images(head, np.zeros((1, 1, 64, 64), np.uint8))


def test_training_on_tiles_draws_tiles_per_image_and_checks_the_model_size(tmp_path) -> None:
    images = np.random.default_rng(5).integers(0, 256, (8, 1, 64, 64), dtype=np.uint8)
    cfg = TrainConfig(epochs=2, batch_size=16, seed=0)
    tiling = TilingConfig(tile=32, tiles_per_image=4)
    mcfg = ModelConfig(image_size=32, latent_dim=4, hidden=32)
    result = train(images, mcfg, ObjectiveConfig(), cfg, tmp_path / "a", progress=False,
                   tiling=tiling)  # fmt: skip
    assert result.status == "finished" and result.epochs_completed == 2
    with pytest.raises(ValueError, match="model image_size 64 but the tiles are 32 px"):
        train(images, mcfg.model_copy(update={"image_size": 64}), ObjectiveConfig(), cfg,
              tmp_path / "b", progress=False, tiling=tiling)  # fmt: skip
