"""AUPRO against hand-computed curves: one vote per defect region, not per pixel."""

import numpy as np
import pytest

from granvae.metrics.aupro import aupro


def _case(region_b_value: float) -> tuple[np.ndarray, np.ndarray]:
    """1000 defect-free pixels valued 0..999; region A (1 px) above all of them; region B
    (4 px, a separate component) at ``region_b_value``."""
    maps = np.zeros((1, 40, 40))
    masks = np.zeros((1, 40, 40), np.uint8)
    flat = maps.ravel()
    normal = np.ones(flat.size, bool)
    masks[0, 0, 0] = 1  # A
    masks[0, 10:12, 10:12] = 1  # B
    normal[masks.ravel() > 0] = False
    idx = np.flatnonzero(normal)
    flat[idx[:1000]] = np.arange(1000.0)
    flat[idx[1000:]] = -1.0  # the remaining normal pixels never fire
    maps[0, 0, 0] = 5000.0
    maps[0, 10:12, 10:12] = region_b_value
    return maps, masks


def test_missed_region_counts_half_whatever_its_size():
    """A found, B never: PRO = 0.5 at every FPR, so AUPRO = 0.5 (a pixel-level TPR would say
    1/5 = 0.2: the test fails if regions are pooled into pixels)."""
    maps, masks = _case(-10.0)
    assert aupro(maps, masks) == pytest.approx(0.5, abs=1e-3)


def test_region_found_from_a_known_false_positive_rate():
    """B at 849.5 lies below only 150 of the 1595 normal pixels (850..999), so B is found
    from FPR = 150/1595 on and A always: area = 0.5 * 0.3 + 0.5 * (0.3 - 150/1595), over 0.3."""
    maps, masks = _case(849.5)
    n_normal = masks.size - masks.sum()
    fpr_b = 150 / n_normal
    want = (0.5 * 0.3 + 0.5 * (0.3 - fpr_b)) / 0.3
    assert aupro(maps, masks) == pytest.approx(want, abs=2e-3)


def test_perfect_and_chance_maps():
    rng = np.random.default_rng(0)
    masks = np.zeros((20, 32, 32), np.uint8)
    for i in range(20):
        y, x = rng.integers(0, 28, 2)
        masks[i, y : y + 4, x : x + 4] = 1
    assert aupro(masks + rng.uniform(0, 0.5, masks.shape), masks) == pytest.approx(1.0)
    chance = aupro(rng.uniform(size=masks.shape), masks)
    assert 0.10 < chance < 0.20  # PRO ~ FPR: area 0.3^2/2 over 0.3 = 0.15


def test_no_region_gives_nan():
    assert np.isnan(aupro(np.zeros((2, 8, 8)), np.zeros((2, 8, 8), np.uint8)))


def test_tied_map_values_interpolate_to_max_fpr():
    """A constant map: every pixel fires at one threshold, FPR and PRO jump 0 -> 1 together.
    The curve between the two measured points is the diagonal, so the area up to 0.3 is
    0.3^2 / 2 over 0.3 = 0.15 (closing it flat at the last point below 0.3 gave 0.0)."""
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[0, 4:8, 4:8] = 1
    assert aupro(np.ones((2, 16, 16)), masks) == pytest.approx(0.15, abs=1e-9)


def test_diagonal_neighbours_are_one_region():
    """8-connectivity: two pixels touching at a corner are one defect region. Found pixel +
    missed pixel in one region gives PRO 0.5 everywhere (0.5); counted as two regions with
    a third, found one, it would be 2/3."""
    maps = np.random.default_rng(0).uniform(size=(1, 12, 12))  # normal pixels: no ties
    masks = np.zeros((1, 12, 12), np.uint8)
    masks[0, 2, 2] = masks[0, 3, 3] = 1  # corner-touching pair
    masks[0, 8, 8] = 1  # a separate, found region
    maps[0, 2, 2] = maps[0, 8, 8] = 10.0  # found
    maps[0, 3, 3] = -10.0  # missed, below every normal pixel
    assert aupro(maps, masks) == pytest.approx(0.75, abs=1e-3)
