"""Parts in fixtures: registration to a reference frame and position-aware statistics.

No model here: a part is a bright plate on a dark fixture, and its "anomaly map" is what a
tile model's map of such a part looks like (a ridge along the outline, which moves with the
part, plus a response where a defect is). That is enough to show the failure the benchmark
measured (the map's maximum sits on the outline) and that standardising per pixel on a
registered reference frame removes it. The edge twin is held to the same numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, sobel

from granvae.scoring import position, registration
from granvae.scoring.registration import Rigid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from granvae_edge import position as edge_position  # noqa: E402
from granvae_edge import registration as edge_registration  # noqa: E402

SIDE = 192


def part(rng: np.random.Generator, dy: float = 0.0, dx: float = 0.0, angle: float = 0.0):
    """A textured plate with a notch (so rotation is observable) on a dark fixture, moved
    by ``Rigid(angle, dy, dx)`` from the centred pose; float32 (H, W)."""
    ys, xs = np.indices((SIDE, SIDE), dtype=np.float64)
    c = (SIDE - 1) / 2.0
    a = np.deg2rad(-angle)  # the pose's inverse, to sample the centred plate
    y0, x0 = ys - c - dy, xs - c - dx
    u = np.cos(a) * y0 - np.sin(a) * x0
    v = np.sin(a) * y0 + np.cos(a) * x0
    plate = (np.abs(u) < 0.3 * SIDE) & (np.abs(v) < 0.36 * SIDE)
    notch = (u < -0.18 * SIDE) & (np.abs(v - 0.1 * SIDE) < 0.06 * SIDE)
    texture = 8.0 * np.sin(2 * np.pi * (u + 0.3 * v) / 9.0)
    image = np.where(plate & ~notch, 130.0 + texture, 25.0)
    return (gaussian_filter(image, 0.8) + rng.normal(0, 2.0, image.shape)).astype(np.float32)


def outline_map(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a tile model's map of a part looks like: large on the outline, small noise."""
    g = np.hypot(sobel(image, 0), sobel(image, 1))
    ridge = gaussian_filter(g / g.max(), 1.5)
    return (ridge + 0.01 * gaussian_filter(rng.random(image.shape), 2.0)).astype(np.float32)


@pytest.mark.parametrize("true", [Rigid(2.3, 5.4, -7.2), Rigid(-1.7, -9.6, 11.2)])
def test_registration_recovers_known_shift_and_rotation(true: Rigid):
    rng = np.random.default_rng(0)
    reference = part(rng)
    frame = registration.to_frame(reference, true) + rng.normal(0, 2.0, reference.shape)
    for estimate in (registration.estimate, edge_registration.estimate):
        got = estimate(reference, frame.astype(np.float32))
        assert abs(got.angle - true.angle) < 0.5, got
        assert abs(got.dy - true.dy) < 1.0 and abs(got.dx - true.dx) < 1.0, got
    # the edge twin finds the same motion (same method; its own sub-pixel DFT)
    a, b = registration.estimate(reference, frame), edge_registration.estimate(reference, frame)
    assert abs(a.angle - b.angle) < 1e-6
    assert abs(a.dy - b.dy) <= 0.051 and abs(a.dx - b.dx) <= 0.051


def test_to_frame_and_to_reference_are_inverse_and_match_the_edge():
    rng = np.random.default_rng(1)
    image = gaussian_filter(rng.random((64, 80)), 2.0).astype(np.float32)
    rigid = Rigid(1.5, 2.25, -3.5)
    back = registration.to_reference(registration.to_frame(image, rigid), rigid)
    inner = (slice(12, -12), slice(12, -12))  # away from the clamped border
    assert np.abs(back - image)[inner].max() < 0.02
    edge_rigid = edge_registration.Rigid(1.5, 2.25, -3.5)
    np.testing.assert_allclose(edge_registration.to_frame(image, edge_rigid),
                               registration.to_frame(image, rigid), atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(edge_registration.to_reference(image, edge_rigid),
                               registration.to_reference(image, rigid), atol=1e-5)  # fmt: skip


def _fixture_parts(rng, n: int, defect: bool):
    """Parts shifted up to +-8 px and turned up to 2 degrees; a defect is a faint response
    4 px inside the part's left edge, weaker than the outline's ridge."""
    images, maps = [], []
    for _ in range(n):
        dy, dx = rng.uniform(-8, 8, 2)
        angle = rng.uniform(-2, 2)
        image = part(rng, dy, dx, angle)
        amap = outline_map(image, rng)
        if defect:
            c = (SIDE - 1) / 2.0
            y, x = c + dy + 0.1 * SIDE, c + dx - 0.36 * SIDE + 5.0
            ys, xs = np.indices(image.shape)
            amap = amap + 0.25 * np.exp(-((ys - y) ** 2 + (xs - x) ** 2) / (2 * 2.0**2))
        images.append(image)
        maps.append(amap.astype(np.float32))
    return np.stack(images), np.stack(maps)


def test_position_statistics_flag_a_defect_next_to_a_moving_edge_the_plain_map_misses(tmp_path):
    rng = np.random.default_rng(2)
    good_images, good_maps = _fixture_parts(rng, 24, defect=False)
    val_images, val_maps = _fixture_parts(rng, 8, defect=False)
    bad_images, bad_maps = _fixture_parts(rng, 6, defect=True)

    # Plain map: the maximum is the outline's, defective parts look like good ones.
    plain_threshold = val_maps.reshape(8, -1).max(1).max()
    plain_bad = bad_maps.reshape(6, -1).max(1)
    assert (plain_bad > plain_threshold).sum() <= 1

    stats = position.fit(good_images, good_maps, register=True, dilate=1)
    val_scores, _ = position.apply(stats, val_images, val_maps)
    bad_scores, zs = position.apply(stats, bad_images, bad_maps)
    assert (bad_scores > val_scores.max()).all(), (bad_scores, val_scores.max())
    # ... and the z-map peaks on the defect, not on the outline
    peak = np.unravel_index(np.argmax(zs[0]), zs[0].shape)
    assert bad_maps[0][peak] - outline_map(bad_images[0], np.random.default_rng(9))[peak] > 0.1

    # The edge twin: same statistics file, same z-maps and scores.
    stats.save(tmp_path / position.STATS_FILE)
    edge = edge_position.PositionStats.load(tmp_path / position.STATS_FILE)
    for image, amap, z, score in zip(bad_images[:3], bad_maps[:3], zs[:3], bad_scores[:3],
                                     strict=True):  # fmt: skip
        edge_z = edge.standardised(image, amap)
        np.testing.assert_allclose(edge_z, z, atol=0.05 * float(np.abs(z).max()))
        assert edge.score(edge_z) == pytest.approx(float(score), rel=0.02)


def test_unregistered_statistics_need_the_registration_on_a_moving_part():
    """Why registration: without it the outline's band of motion gets a large spread, and a
    defect inside that band is drowned (the measurement behind ``register=True``)."""
    rng = np.random.default_rng(3)
    good_images, good_maps = _fixture_parts(rng, 24, defect=False)
    val_images, val_maps = _fixture_parts(rng, 8, defect=False)
    bad_images, bad_maps = _fixture_parts(rng, 6, defect=True)
    results = {}
    for register in (True, False):
        stats = position.fit(good_images, good_maps, register=register, dilate=1)
        val_scores, _ = position.apply(stats, val_images, val_maps)
        bad_scores, _ = position.apply(stats, bad_images, bad_maps)
        results[register] = float(np.mean(bad_scores > val_scores.max()))
    assert results[True] == 1.0 and results[False] < results[True], results


def test_edge_refuses_a_broken_statistics_file(tmp_path):
    path = tmp_path / "position_stats.npz"
    np.savez(path, reference=np.zeros((4, 4)), mean=np.zeros((4, 4)), spread=np.zeros((4, 4)),
             register=np.asarray(True), reduce=np.asarray("max"), topk=np.asarray(1))  # fmt: skip
    with pytest.raises(edge_position.PositionStatsError, match="spread > 0"):
        edge_position.PositionStats.load(path)
    np.savez(path, mean=np.zeros((4, 4)))
    with pytest.raises(edge_position.PositionStatsError, match="not a position statistics"):
        edge_position.PositionStats.load(path)
