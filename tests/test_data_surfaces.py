"""Inspection surfaces and defects: reproducible, honest masks, monotone severity, and
classes whose shapes really differ in complexity."""

from __future__ import annotations

import numpy as np
import pytest

from granvae.data import FactorDataset, generate
from granvae.data.defects import MASK_MIN_DELTA
from granvae.data.surfaces import CLASS_NAMES, Surfaces, render_defect

DEFECTS = CLASS_NAMES[1:]
SEVERITIES = (0.2, 0.4, 0.6, 0.8, 1.0)


def _clean(size: int = 64, seed: int = 0) -> np.ndarray:
    surfaces = Surfaces(size)
    rng = np.random.default_rng(seed)
    return surfaces.sample_observations_from_factors(surfaces.sample_factors(1, rng), rng)[0]


def _neighbours(img: np.ndarray) -> list[np.ndarray]:
    """The 8 neighbours P2..P9, clockwise from north (Zhang-Suen order)."""
    p = np.pad(img, 1)
    h, w = img.shape
    offsets = [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)]
    return [p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in offsets]


def _skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning: a one-pixel-wide skeleton preserving branches."""
    img = (mask > 0).astype(np.int64)
    changed = True
    while changed:
        changed = False
        for step in (0, 1):
            n = _neighbours(img)
            count = sum(n)
            transitions = sum((n[k] == 0) & (n[(k + 1) % 8] == 1) for k in range(8))
            p2, p4, p6, p8 = n[0], n[2], n[4], n[6]
            if step == 0:
                side = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                side = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            kill = (img == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & side
            if kill.any():
                img[kill] = 0
                changed = True
    return img


def _endpoints(mask: np.ndarray) -> int:
    skeleton = _skeleton(mask)
    return int(((skeleton == 1) & (sum(_neighbours(skeleton)) == 1)).sum())


def test_clean_surfaces_are_a_factor_dataset():
    surfaces = Surfaces(32)
    assert isinstance(surfaces, FactorDataset)
    assert surfaces.observation_shape == (1, 32, 32)
    factors = surfaces.sample_factors(8, np.random.default_rng(0))
    a = surfaces.sample_observations_from_factors(factors, np.random.default_rng(5))
    b = surfaces.sample_observations_from_factors(factors, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape == (8, 1, 32, 32)
    assert a.tobytes() == b.tobytes()


def test_brightness_factor_raises_part_gray_level():
    surfaces = Surfaces(32)
    factors = np.tile([0, 0, 0, 1, 1], (4, 1))
    factors[:, 2] = np.arange(4)
    images = surfaces.sample_observations_from_factors(factors, np.random.default_rng(0))
    centre_mean = images[:, 0, 8:24, 8:24].reshape(4, -1).mean(axis=1)
    assert (np.diff(centre_mean) > 15).all()


def test_offset_factor_moves_the_part():
    surfaces = Surfaces(32)
    region = surfaces.part_region(np.array([[0, 0, 0, 0, 1], [0, 0, 0, 2, 1]]))
    xs = np.arange(32) + 0.5
    centre_x = (region * xs).sum(axis=(1, 2)) / region.sum(axis=(1, 2))
    assert centre_x[1] - centre_x[0] == pytest.approx(4.0, abs=0.1)


def test_generate_surfaces_is_deterministic_by_seed():
    a, meta = generate("surfaces", 6, 2, 12, seed=3, image_size=32)
    b, _ = generate("surfaces", 6, 2, 12, seed=3, image_size=32)
    c, _ = generate("surfaces", 6, 2, 12, seed=4, image_size=32)
    for name in ("train", "val", "test"):
        for field in ("images", "labels", "factors", "masks", "severity"):
            assert getattr(a[name], field).tobytes() == getattr(b[name], field).tobytes()
    assert a["test"].images.tobytes() != c["test"].images.tobytes()
    assert meta.class_names == ("good", "blob", "scratch", "crack")
    assert meta.seed == 3


def test_generate_surfaces_split_composition():
    splits, meta = generate("surfaces", 5, 3, 40, seed=0, image_size=32, defect_fraction=0.5)
    assert (splits["train"].labels == 0).all() and (splits["val"].labels == 0).all()
    test = splits["test"]
    assert np.bincount(test.labels, minlength=4).tolist() == [20, 7, 7, 6]
    defect = test.labels > 0
    assert ((test.severity[defect] >= 0.2) & (test.severity[defect] <= 1.0)).all()
    assert (test.severity[~defect] == 0).all()
    assert test.masks[defect].any(axis=(1, 2)).all() and not test.masks[~defect].any()
    assert (test.factors >= 0).all() and test.factors.shape == (40, 5)
    all_names = splits["train"].names + splits["val"].names + test.names
    assert len(set(all_names)) == 48 and all_names[0] == "gen:0:0"


def test_test_split_does_not_depend_on_train_size():
    small, _ = generate("surfaces", 2, 2, 6, seed=1, image_size=32)
    large, _ = generate("surfaces", 9, 2, 6, seed=1, image_size=32)
    assert small["test"].images.tobytes() == large["test"].images.tobytes()


def test_generated_defects_stay_on_the_part():
    splits, _ = generate("surfaces", 1, 0, 30, seed=2, image_size=32, defect_fraction=1.0)
    test = splits["test"]
    region = Surfaces(32).part_region(test.factors)
    assert (region[test.masks > 0] > 0).all()


@pytest.mark.parametrize("cls", DEFECTS)
@pytest.mark.parametrize("severity", (0.2, 0.6, 1.0))
def test_mask_marks_exactly_the_changed_pixels(cls, severity):
    clean = _clean()
    for seed in range(4):
        out, mask = render_defect(clean, cls, severity, np.random.default_rng(seed))
        diff = np.abs(out.astype(int) - clean.astype(int))[0]
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1} and mask.any()
        assert (diff[mask == 0] == 0).all()
        assert (diff[mask == 1] >= MASK_MIN_DELTA).all()


@pytest.mark.parametrize("cls", DEFECTS)
def test_severity_is_monotone(cls):
    clean = _clean()
    for seed in range(4):
        results = [render_defect(clean, cls, s, np.random.default_rng(seed)) for s in SEVERITIES]
        change = [np.abs(o.astype(int) - clean.astype(int)).sum() for o, _ in results]
        area = [m.sum() for _, m in results]
        assert (np.diff(change) > 0).all(), change
        assert (np.diff(area) >= 0).all(), area


@pytest.mark.parametrize("cls", DEFECTS)
def test_low_severity_is_subtle_and_high_is_obvious(cls):
    clean = _clean()
    peaks = {}
    for severity in (0.2, 1.0):
        outs = [render_defect(clean, cls, severity, np.random.default_rng(s))[0] for s in range(6)]
        diffs = [np.abs(out.astype(int) - clean.astype(int)) for out in outs]
        peaks[severity] = np.mean([d.max() for d in diffs])
    assert peaks[0.2] < 30  # comparable to the +/-12 machining marks and the noise
    assert peaks[1.0] > 55


def test_classes_differ_in_shape_complexity():
    clean = _clean()
    masks = {
        cls: [render_defect(clean, cls, 1.0, np.random.default_rng(s))[1] for s in range(10)]
        for cls in DEFECTS
    }
    endpoints = {cls: np.mean([_endpoints(m) for m in ms]) for cls, ms in masks.items()}
    width = {
        cls: np.mean([m.sum() / max(_skeleton(m).sum(), 1) for m in ms])
        for cls, ms in masks.items()
    }
    assert endpoints["scratch"] == pytest.approx(2.0)  # one unbranched line
    assert endpoints["crack"] > endpoints["scratch"] + 1.0  # branched
    assert width["scratch"] < 4 and width["crack"] < 4  # thin lines
    assert width["blob"] > 5 * width["crack"]  # a compact spot


def test_render_defect_rejects_bad_arguments():
    clean = _clean(32)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="scratch"):
        render_defect(clean, "dent", 0.5, rng)
    with pytest.raises(ValueError, match="severity"):
        render_defect(clean, "blob", 0.0, rng)
    with pytest.raises(ValueError, match="uint8"):
        render_defect(clean.astype(np.float32), "blob", 0.5, rng)


def test_unknown_kind_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"shapes.*surfaces"):
        generate("mnist", 1, 0, 0, seed=0)
