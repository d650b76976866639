"""The dSprites-like renderer: deterministic, binary, and every factor visibly does its job."""

from __future__ import annotations

import numpy as np
import pytest

from granvae.data import FactorDataset
from granvae.data.shapes import Shapes

MID = np.array([0, 5, 0, 16, 16])  # square, largest scale, upright, centred


def _rows(factor: int, size: int, base: np.ndarray = MID) -> np.ndarray:
    rows = np.tile(base, (size, 1))
    rows[:, factor] = np.arange(size)
    return rows


def _centroid(images: np.ndarray) -> np.ndarray:
    """(n, 2) mean (x, y) of lit pixels."""
    lit = images[:, 0] > 0
    ys, xs = np.mgrid[0 : lit.shape[1], 0 : lit.shape[2]]
    area = lit.sum(axis=(1, 2))
    return np.stack([(lit * xs).sum(axis=(1, 2)) / area, (lit * ys).sum(axis=(1, 2)) / area], 1)


def test_is_a_factor_dataset_with_dsprites_grid():
    shapes = Shapes(image_size=32)
    assert isinstance(shapes, FactorDataset)
    assert shapes.factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert shapes.factor_sizes == (3, 6, 40, 32, 32)
    assert shapes.observation_shape == (1, 32, 32)
    factors = shapes.sample_factors(500, np.random.default_rng(0))
    assert factors.dtype == np.int64 and factors.shape == (500, 5)
    assert (factors.min(axis=0) == 0).all()
    assert (factors.max(axis=0) == np.array(shapes.factor_sizes) - 1).all()


def test_rendering_is_deterministic_and_binary():
    shapes = Shapes(image_size=32)
    factors = shapes.sample_factors(200, np.random.default_rng(1))
    first = shapes.sample_observations_from_factors(factors, np.random.default_rng(2))
    second = shapes.sample_observations_from_factors(factors, np.random.default_rng(99))
    assert first.dtype == np.uint8 and first.shape == (200, 1, 32, 32)
    assert first.tobytes() == second.tobytes()
    assert set(np.unique(first)) <= {0, 255}


@pytest.mark.parametrize("factor", range(5))
def test_every_factor_value_renders_a_sprite(factor):
    shapes = Shapes(image_size=32)
    for shape in range(3):
        base = MID.copy()
        base[0] = shape
        images = shapes.render(_rows(factor, shapes.factor_sizes[factor], base))
        assert (images.reshape(len(images), -1) > 0).any(axis=1).all()


def test_centroid_follows_position():
    shapes = Shapes(image_size=64)
    cx = _centroid(shapes.render(_rows(3, 32)))
    cy = _centroid(shapes.render(_rows(4, 32)))
    assert (np.diff(cx[:, 0]) > 0).all() and np.allclose(cx[:, 1], cx[0, 1])
    assert (np.diff(cy[:, 1]) > 0).all() and np.allclose(cy[:, 0], cy[0, 0])


@pytest.mark.parametrize("shape", range(3))
def test_area_grows_with_scale(shape):
    shapes = Shapes(image_size=64)
    base = MID.copy()
    base[0] = shape
    area = (shapes.render(_rows(1, 6, base)) > 0).sum(axis=(1, 2, 3))
    assert (np.diff(area) > 0).all()


def test_orientation_gives_distinct_poses_of_the_heart():
    shapes = Shapes(image_size=64)
    base = MID.copy()
    base[0] = 2
    images = shapes.render(_rows(2, 40, base)).reshape(40, -1)
    assert len({row.tobytes() for row in images}) == 40


def test_shapes_differ_from_each_other():
    shapes = Shapes(image_size=32)
    images = shapes.render(_rows(0, 3)).reshape(3, -1)
    assert len({row.tobytes() for row in images}) == 3


def test_out_of_range_factors_are_refused():
    shapes = Shapes(image_size=32)
    with pytest.raises(ValueError, match="factor 2"):
        shapes.render(np.array([[0, 0, 40, 0, 0]]))
