"""The edge's numpy tiling (deploy/granvae_edge/tiling.py) against the tiling contract.

Geometry and stitching are checked on maps whose right answer is known without the code under
test (a constant, or tiles cut from a known map); smoothing against a direct 2-D correlation
written out here and against training's torch smoothing (granvae.scoring.maps).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch  # tests may import torch; the edge package may not
from edge_fixtures import DEPLOY  # noqa: F401  (puts deploy/ on sys.path)
from granvae_edge import tiling

from granvae.scoring import maps

# (height, width, tile, stride): strides that divide the span, that do not, and non-square.
GEOMETRIES = [
    (512, 512, 64, 64),
    (512, 512, 64, 32),
    (512, 512, 64, 48),
    (100, 100, 64, 30),
    (100, 157, 64, 30),
    (64, 64, 64, 64),
]


def test_origins_follow_the_contract_and_cover_the_border():
    assert tiling.origins(512, 64, 64) == list(range(0, 449, 64))
    assert tiling.origins(512, 64, 48) == [0, 48, 96, 144, 192, 240, 288, 336, 384, 432, 448]
    assert tiling.origins(100, 64, 30) == [0, 30, 36]
    assert tiling.origins(64, 64, 5) == [0]
    with pytest.raises(ValueError, match="tile 65 .* side 64"):
        tiling.origins(64, 65, 1)
    with pytest.raises(ValueError, match="stride"):
        tiling.origins(64, 32, 0)


def test_tiles_are_row_major():
    image = np.arange(100 * 157, dtype=np.int32).reshape(100, 157)
    tiles = tiling.extract_tiles(image, 64, 30)
    xs = tiling.origins(157, 64, 30)
    assert tiles.shape == (3 * len(xs), 64, 64)
    assert tiles[1][0, 0] == image[0, xs[1]]  # second tile: same row, next column
    assert tiles[len(xs)][0, 0] == image[30, 0]  # first tile of the second row
    assert np.array_equal(tiles[-1], image[36:, -64:])


@pytest.mark.parametrize(("height", "width", "tile", "stride"), GEOMETRIES)
def test_constant_map_stitches_to_that_constant(height, width, tile, stride):
    n = len(tiling.tile_origins(height, width, tile, stride))
    value = np.float32(0.7)
    stitched = tiling.stitch(np.full((n, tile, tile), value), height, width, stride)
    assert stitched.shape == (height, width) and stitched.dtype == np.float32
    # No seam and no uncovered pixel: a sum instead of a mean, or a gap, breaks this.
    np.testing.assert_allclose(stitched, value, rtol=1e-6)


@pytest.mark.parametrize(("height", "width", "tile", "stride"), GEOMETRIES)
def test_tiles_cut_from_a_map_stitch_back_to_it(height, width, tile, stride):
    """Overlapping tiles agree where they overlap, so the mean must rebuild the map exactly;
    a tile placed one pixel off lands different values and fails this."""
    full = np.random.default_rng(height + stride).random((height, width), dtype=np.float32)
    stitched = tiling.stitch(tiling.extract_tiles(full, tile, stride), height, width, stride)
    np.testing.assert_allclose(stitched, full, rtol=1e-6)


def test_stitch_refuses_a_wrong_number_of_tiles():
    with pytest.raises(ValueError, match="has 64 tiles"):
        tiling.stitch(np.zeros((63, 64, 64)), 512, 512, 64)


def _direct_correlation(amap: np.ndarray, sigma: float) -> np.ndarray:
    """The contract written out: outer(g, g) correlated over a reflect-padded map, float64."""
    r = int(np.ceil(3 * sigma))
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    kernel = np.outer(g, g) / g.sum() ** 2
    padded = np.pad(amap.astype(np.float64), r, mode="reflect")
    h, w = amap.shape
    out = np.zeros((h, w))
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out += kernel[dy, dx] * padded[dy : dy + h, dx : dx + w]
    return out


@pytest.mark.parametrize(("shape", "sigma"), [((96, 150), 2.0), ((64, 64), 1.3), ((200, 70), 3.0)])
def test_smoothing_equals_a_direct_2d_correlation(shape, sigma):
    amap = np.random.default_rng(1).gamma(2.0, size=shape).astype(np.float32)
    amap[40:43, 50:52] += 30.0  # a defect-like peak, so the border and the peak both count
    np.testing.assert_allclose(tiling.smooth(amap, sigma), _direct_correlation(amap, sigma),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_smoothing_equals_training_torch_smoothing():
    amap = np.random.default_rng(2).gamma(2.0, size=(160, 224)).astype(np.float32)
    for sigma in (1.0, 2.0):
        expected = maps.smooth_map(torch.from_numpy(amap)[None], maps.gaussian_kernel(sigma))[0]
        np.testing.assert_allclose(tiling.smooth(amap, sigma), expected.numpy(), rtol=1e-5,
                                   atol=1e-6)  # fmt: skip


def test_reduce_max_and_topk():
    amap = np.random.default_rng(3).random((50, 40), dtype=np.float32)
    assert tiling.reduce_map(amap, "max") == pytest.approx(float(amap.max()))
    top5 = np.sort(amap.ravel())[-5:]
    assert tiling.reduce_map(amap, "topk", 5) == pytest.approx(float(top5.mean()), rel=1e-6)
    assert tiling.reduce_map(amap, "topk", 1) == pytest.approx(float(amap.max()))
    with pytest.raises(ValueError, match="topk"):
        tiling.reduce_map(amap, "topk", 2001)
    with pytest.raises(ValueError, match="reduce"):
        tiling.reduce_map(amap, "mean")


def test_explaining_tile_is_the_tile_under_the_stitched_maximum():
    """A 64-px part, tile = stride = 32: tile 0 has the largest raw peak, but smoothing
    spreads it while tile 3's broad bump holds the image map's maximum: tile 3 explains."""
    origins = tiling.tile_origins(64, 64, 32, 32)
    maps = np.zeros((4, 32, 32), np.float32)
    maps[0, 5, 5] = 10.0  # a one-pixel spike: the largest raw value
    maps[3, 8:24, 8:24] = 4.0  # a broad bump: survives smoothing
    image_map = tiling.smooth(tiling.stitch(maps, 64, 64, 32), 2.0)
    assert int(np.argmax(maps.reshape(4, -1).max(1))) == 0
    assert tiling.explaining_tile(maps, image_map, origins, 32) == 3
    overlap = tiling.tile_origins(48, 48, 32, 16)  # 4 tiles all covering the centre
    maps = np.zeros((4, 32, 32), np.float32)
    for k, (y, x) in enumerate(overlap):  # image pixel (16, 16) in each tile's frame
        maps[k, 16 - y, 16 - x] = [1.0, 3.0, 3.0, 2.0][k]  # tiles 1 and 2 tie: the first wins
    centre = np.zeros((48, 48), np.float32)
    centre[16, 16] = 1.0
    assert tiling.explaining_tile(maps, centre, overlap, 32) == 1
