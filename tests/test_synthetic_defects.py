"""Synthetic defects on good images, and the per-line choice of a score rule from them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, uniform_filter

from granvae.data.synthetic_defects import (
    SYNTHETIC_CLASSES,
    SyntheticParams,
    synthesize,
    synthetic_set,
)
from granvae.synthetic_choice import CandidateScores, choose_rule, selection_columns


def textured(rng: np.random.Generator, n: int, side: int = 64) -> np.ndarray:
    """uint8 (n, 1, side, side) good images: a brushed texture with noise."""
    ys, xs = np.indices((side, side))
    out = []
    for _ in range(n):
        t = rng.uniform(0, np.pi)
        base = 120 + 15 * np.sin(2 * np.pi * (xs * np.cos(t) + ys * np.sin(t)) / 7.0)
        out.append(base + gaussian_filter(rng.normal(0, 6, (side, side)), 1.0))
    return np.clip(np.stack(out)[:, None], 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", SYNTHETIC_CLASSES)
def test_masks_are_exactly_the_changed_pixels(kind: str):
    rng = np.random.default_rng(0)
    images = textured(rng, 6)
    params = SyntheticParams(size_px=(10.0, 16.0))
    for i in range(5):
        clean = images[i]
        out, mask = synthesize(clean, kind, rng, params, donor=images[i + 1])
        assert out.dtype == np.uint8 and out.shape == clean.shape
        changed = (out != clean).any(axis=0)
        np.testing.assert_array_equal(mask, changed)
        assert mask.sum() >= 3, f"{kind}: an invisible defect"
        delta = np.abs(out.astype(int) - clean.astype(int)).max(axis=0)
        assert delta[mask].min() >= params.min_delta
        ys, xs = np.nonzero(mask)  # the extent asked for, not the whole image
        assert np.ptp(ys) <= 2 * 16 and np.ptp(xs) <= 2 * 16, (kind, np.ptp(ys), np.ptp(xs))


def test_region_confines_the_defect_and_set_deals_every_kind():
    rng = np.random.default_rng(1)
    images = textured(rng, 10)
    region = np.zeros((10, 64, 64), bool)
    region[:, 40:, 40:] = True  # the part is in the bottom-right corner
    out, masks, kinds = synthetic_set(images, rng, params=SyntheticParams(size_px=(6.0, 8.0)),
                                      regions=region)  # fmt: skip
    assert sorted(set(kinds)) == sorted(SYNTHETIC_CLASSES)
    assert masks.any(axis=(1, 2)).all()
    ys, xs = np.nonzero(masks.any(axis=0))
    assert ys.min() >= 40 - 8 and xs.min() >= 40 - 8
    untouched = ~masks[:, None].repeat(1, axis=1)
    np.testing.assert_array_equal(out[untouched], images[untouched])


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown synthetic defect 'hole'"):
        synthesize(np.zeros((1, 16, 16), np.uint8), "hole", np.random.default_rng(0))


def _local_max_rule(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """A localized rule: the largest smoothed deviation from the mean good image."""
    dev = np.abs(images[:, 0].astype(np.float32) - reference)
    return uniform_filter(dev, size=(1, 3, 3)).reshape(len(images), -1).max(1)


def _global_mean_rule(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """A global rule: the mean absolute deviation over the whole image (dilutes a small
    defect over 4096 pixels)."""
    dev = np.abs(images[:, 0].astype(np.float32) - reference)
    return dev.reshape(len(images), -1).mean(1)


def test_the_per_line_choice_picks_the_rule_that_wins_on_synthetic_defects():
    rng = np.random.default_rng(2)
    train, held_out, to_damage = textured(rng, 64), textured(rng, 200), textured(rng, 100)
    reference = train[:, 0].astype(np.float32).mean(0)
    params = SyntheticParams(size_px=(8.0, 14.0))
    defective, masks, kinds = synthetic_set(to_damage, rng, params=params)
    rules = {"global_mean": _global_mean_rule, "local_max": _local_max_rule}
    candidates = {}
    for name, rule in rules.items():
        bad = rule(defective, reference)
        candidates[name] = CandidateScores(
            good=rule(held_out, reference),
            synthetic={k: bad[kinds == k] for k in SYNTHETIC_CLASSES},
        )
    choice = choose_rule(candidates, false_alarm_rate=0.01)
    assert choice.best == "local_max"
    best, other = choice.estimate("local_max"), choice.estimate("global_mean")
    assert best.synthetic_recall > other.synthetic_recall + 0.2
    # the estimate is the class-mean of recalls at the good images' 1% conformal threshold:
    # rank ceil(0.99 * (n + 1)) = 199 of the 200 held-out good scores
    good = candidates["local_max"].good
    threshold = np.sort(good)[199 - 1]
    per_class = [np.mean(candidates["local_max"].synthetic[k] > threshold)
                 for k in SYNTHETIC_CLASSES]  # fmt: skip
    assert best.threshold == pytest.approx(threshold)
    assert best.synthetic_recall == pytest.approx(np.mean(per_class))
    assert set(best.per_class) == set(SYNTHETIC_CLASSES)
    assert selection_columns(best)["synthetic_recall_at_far"] == best.synthetic_recall


def test_real_recall_is_reported_beside_the_estimate():
    good = np.arange(100, dtype=float)
    scores = CandidateScores(good=good, synthetic={"scratch": np.array([50.0, 150.0])},
                             real=np.array([120.0, 10.0, 130.0, 140.0]))  # fmt: skip
    est = choose_rule({"only": scores}).estimate("only")
    assert est.synthetic_recall == 0.5 and est.real_recall == 0.75
    assert est.gap == pytest.approx(-0.25)
    assert selection_columns(est)["synthetic_gap"] == pytest.approx(-0.25)
