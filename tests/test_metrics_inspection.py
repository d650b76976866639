"""Inspection metrics and threshold calibration against hand-computed values."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from granvae.metrics.inspection import (
    compute_inspection,
    per_class_table,
    pixel_auroc,
    severity_band_key,
)
from granvae.metrics.thresholds import Threshold, calibrate_threshold

CLASSES = ("good", "blob", "scratch", "crack")

# 4 good, 4 defect. Pairs (defect, good) ranked correctly: 0.5 beats 0.1 and 0.2
# (2 of 4), 0.8 / 0.9 / 1.0 beat all four -> 14 / 16 = 0.875.
GOOD = [0.1, 0.2, 0.6, 0.7]
DEFECT = [0.5, 0.8, 0.9, 1.0]
SCORES = np.array(GOOD + DEFECT)
LABELS = np.array([0, 0, 0, 0, 1, 1, 2, 2])


# ---------------------------------------------------------------- image metrics


def test_auroc_recall_far_hand_computed() -> None:
    m = compute_inspection(SCORES, LABELS, 0.65, CLASSES)
    assert m["image_auroc"] == pytest.approx(0.875)
    # defects above 0.65: 0.8, 0.9, 1.0 -> 3/4; good above 0.65: 0.7 -> 1/4
    assert m["recall_at_far"] == pytest.approx(0.75)
    assert m["observed_far"] == pytest.approx(0.25)
    assert m["threshold"] == 0.65
    assert (m["n_good"], m["n_defect"]) == (4.0, 4.0)
    assert all(type(v) is float for v in m.values())


def test_per_class_recall_and_missing_class_is_nan() -> None:
    m = compute_inspection(SCORES, LABELS, 0.65, CLASSES)
    assert m["recall_blob"] == pytest.approx(0.5)  # 0.5 missed, 0.8 caught
    assert m["recall_scratch"] == pytest.approx(1.0)  # 0.9, 1.0
    assert math.isnan(m["recall_crack"])  # no crack images in the test set
    assert "recall_good" not in m


def test_score_equal_to_threshold_is_not_flagged() -> None:
    m = compute_inspection(SCORES, LABELS, 0.8, CLASSES)
    # strict rule: 0.8 itself is not a defect call -> only 0.9, 1.0
    assert m["recall_at_far"] == pytest.approx(0.5)
    assert m["observed_far"] == 0.0


def test_tied_scores_give_half_credit() -> None:
    m = compute_inspection(np.array([0.5, 0.5]), np.array([0, 1]), 0.0, CLASSES)
    assert m["image_auroc"] == pytest.approx(0.5)


def test_threshold_object_accepted() -> None:
    thr = Threshold(value=0.65, false_alarm_rate=0.25, n_images=4)
    assert compute_inspection(SCORES, LABELS, thr, CLASSES)["threshold"] == 0.65


def test_no_defects_or_no_good_gives_nan_auroc_not_crash() -> None:
    only_good = compute_inspection(np.array(GOOD), np.zeros(4, dtype=int), 0.65, CLASSES)
    assert math.isnan(only_good["image_auroc"]) and math.isnan(only_good["recall_at_far"])
    assert only_good["observed_far"] == pytest.approx(0.25)
    assert only_good["n_defect"] == 0.0
    only_defect = compute_inspection(np.array(DEFECT), np.ones(4, dtype=int), 0.65, CLASSES)
    assert math.isnan(only_defect["image_auroc"]) and math.isnan(only_defect["observed_far"])
    assert only_defect["recall_at_far"] == pytest.approx(0.75)


# -------------------------------------------------------------------- severity


def test_severity_band_recall_constructed() -> None:
    scores = np.array([0.0, 1.0, 3.0, 1.0, 3.0, 3.0, 1.0, 3.0])
    labels = np.array([0, 1, 1, 2, 2, 3, 3, 3])
    # band (0, 0.4]: 0.2 missed, 0.4 caught (right-closed) -> 1/2
    # band (0.4, 0.7]: 0.5 missed, 0.7 caught -> 1/2
    # band (0.7, 1.0]: 0.9 caught, 1.0 missed, 0.8 caught -> 2/3
    severity = np.array([0.0, 0.2, 0.4, 0.5, 0.7, 0.9, 1.0, 0.8])
    m = compute_inspection(scores, labels, 2.0, CLASSES, severity=severity)
    assert m["recall_severity_0.0_0.4"] == pytest.approx(0.5)
    assert m["recall_severity_0.4_0.7"] == pytest.approx(0.5)
    assert m["recall_severity_0.7_1.0"] == pytest.approx(2 / 3)
    assert m["recall_crack"] == pytest.approx(2 / 3)


def test_empty_severity_band_nan_and_bad_bands_raise() -> None:
    m = compute_inspection(
        SCORES, LABELS, 0.65, CLASSES, severity=np.full(8, 0.9), severity_bands=(0.0, 0.5, 1.0)
    )
    assert math.isnan(m["recall_severity_0.0_0.5"])
    assert m["recall_severity_0.5_1.0"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="severity_bands"):
        compute_inspection(SCORES, LABELS, 0.65, CLASSES, severity=np.ones(8), severity_bands=(1,))


def test_severity_band_key_format() -> None:
    assert severity_band_key(0.4, 0.7) == "recall_severity_0.4_0.7"
    assert severity_band_key(0, 1) == "recall_severity_0.0_1.0"
    assert severity_band_key(0.25, 0.5) == "recall_severity_0.25_0.5"


def test_per_class_table_rows() -> None:
    sev = np.array([0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8])
    rows = per_class_table(SCORES, LABELS, 0.65, CLASSES, sev)
    assert [r["class"] for r in rows] == list(CLASSES)
    good, blob, scratch, crack = rows
    assert (good["n"], good["caught"], good["recall"]) == (4, 1, 0.25)
    assert good["mean_score"] == pytest.approx(0.4)
    assert (blob["n"], blob["caught"], blob["recall"]) == (2, 1, 0.5)
    assert blob["mean_score"] == pytest.approx(0.65)
    assert blob["mean_severity"] == pytest.approx(0.3)
    assert (scratch["caught"], scratch["recall"]) == (2, 1.0)
    assert crack["n"] == 0 and math.isnan(crack["recall"]) and math.isnan(crack["mean_score"])


# ----------------------------------------------------------------------- pixels


def _pixel_case() -> tuple[np.ndarray, np.ndarray]:
    masks = np.zeros((3, 4, 4), dtype=np.uint8)
    masks[1, 1:3, 1:3] = 1  # defect image 1
    masks[2, 0, :] = 1  # defect image 2; image 0 is good (all clean pixels)
    return masks.astype(np.float32), masks


def test_pixel_auroc_perfect_and_inverted() -> None:
    perfect, masks = _pixel_case()
    assert pixel_auroc(perfect, masks) == pytest.approx(1.0)
    assert pixel_auroc(-perfect, masks) == pytest.approx(0.0)
    m = compute_inspection(
        np.array([0.0, 1.0, 1.0]),
        np.array([0, 1, 2]),
        0.5,
        CLASSES,
        pixel_maps=perfect,
        masks=masks,
    )
    assert m["pixel_auroc"] == pytest.approx(1.0)


def test_pixel_auroc_includes_good_images_pixels() -> None:
    maps, masks = _pixel_case()
    maps[0] = 1.0  # the good image lights up fully: its 16 pixels tie with the 8 defect ones
    # positives 8 (score 1); negatives 40: 16 tied at 1 (half credit), 24 at 0
    expected = (8 * 24 + 0.5 * 8 * 16) / (8 * 40)
    assert pixel_auroc(maps, masks) == pytest.approx(expected)


def test_pixel_inputs_validated() -> None:
    maps, masks = _pixel_case()
    scores, labels = np.zeros(3), np.array([0, 1, 2])
    with pytest.raises(ValueError, match="together"):
        compute_inspection(scores, labels, 0.5, CLASSES, pixel_maps=maps)
    with pytest.raises(ValueError, match="pixel_maps"):
        compute_inspection(scores, labels, 0.5, CLASSES, pixel_maps=maps[:, :2], masks=masks)
    assert math.isnan(pixel_auroc(maps, np.zeros_like(masks)))


def test_input_validation_names_field() -> None:
    with pytest.raises(ValueError, match="labels"):
        compute_inspection(SCORES, np.array([0, 1]), 0.5, CLASSES)
    with pytest.raises(ValueError, match="labels"):
        compute_inspection(SCORES, LABELS + 3, 0.5, CLASSES)
    with pytest.raises(ValueError, match="scores"):
        compute_inspection(np.array([np.nan, 1.0]), np.array([0, 1]), 0.5, CLASSES)


# ------------------------------------------------------------------ thresholds


def test_calibration_honours_far_on_same_and_fresh_good_scores() -> None:
    rng = np.random.default_rng(0)
    for n, far in ((1000, 0.01), (1000, 0.05), (5000, 0.05)):
        good = rng.gamma(shape=3.0, scale=10.0, size=n)
        thr = calibrate_threshold(good, far)
        assert np.mean(good > thr.value) <= far
        # conformal: at most one exceedance fewer than the plain quantile would allow
        assert np.mean(good > thr.value) >= far - 2.0 / n  # not needlessly conservative
        assert (thr.n_images, thr.false_alarm_rate, thr.method) == (
            n, far, "conformal_order_statistic"
        )  # fmt: skip
    fresh = rng.gamma(shape=3.0, scale=10.0, size=200_000)
    assert abs(np.mean(fresh > thr.value) - 0.05) < 0.01  # thr from n=5000, far=0.05


def test_calibration_order_statistic_exact() -> None:
    scores = np.arange(1.0, 101.0)  # 1..100 shuffled
    rng = np.random.default_rng(1)
    thr = calibrate_threshold(rng.permutation(scores), 0.07)
    # k = ceil(0.93 * 101) = 94 -> 94th smallest = 94.0; 6 scores above, and a new part
    # exceeds it with probability (101 - 94) / 101 = 6.9% <= 7%
    assert thr.value == 94.0 and thr.rank == 94


def test_calibration_ties_never_exceed_far() -> None:
    good = np.array([1.0] * 10 + [5.0] * 85 + [9.0] * 5)
    thr = calibrate_threshold(good, 0.10)
    # k = ceil(0.9 * 101) = 91 -> s_(91) = 5.0; only the five 9.0s are above: 5% <= 10%
    assert thr.value == 5.0
    assert np.mean(good > thr.value) == pytest.approx(0.05)
    all_tied = calibrate_threshold(np.full(50, 3.0), 0.1)
    assert all_tied.value == 3.0 and np.mean(np.full(50, 3.0) > all_tied.value) == 0.0


def test_calibration_small_n_is_max_good_score() -> None:
    good = np.array([0.3, 0.9, 0.1, 0.5])
    thr = calibrate_threshold(good, 0.01)  # n = 4 < 1 / 0.01
    assert thr.value == 0.9 and thr.n_images == 4
    assert np.mean(good > thr.value) == 0.0
    assert calibrate_threshold(np.array([2.5]), 0.5).value == 2.5


@pytest.mark.parametrize(
    ("scores", "far", "field"),
    [
        ([], 0.01, "good_scores"),
        ([1.0, np.nan], 0.01, "good_scores"),
        ([1.0, np.inf], 0.01, "good_scores"),
        ([1.0, 2.0], 0.0, "false_alarm_rate"),
        ([1.0, 2.0], 1.0, "false_alarm_rate"),
        ([1.0, 2.0], -0.1, "false_alarm_rate"),
    ],
)
def test_calibration_errors_name_field(scores: list[float], far: float, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        calibrate_threshold(np.array(scores, dtype=float), far)


def test_threshold_roundtrip_and_manifest_block() -> None:
    thr = calibrate_threshold(np.linspace(0.0, 1.0, 201), 0.05)
    assert Threshold.from_dict(thr.to_dict()) == thr
    manifest_block = {
        "value": 1.5,
        "score": "neg_elbo",
        "false_alarm_rate": 0.01,
        "calibrated_on": "val",
        "n_images": 200,
        "date": "2025-01-01",
    }
    read = Threshold.from_dict(manifest_block)
    assert (read.value, read.n_images, read.method) == (1.5, 200, "conformal_order_statistic")
    assert list(read.is_defect(np.array([1.5, 1.6]))) == [False, True]
    with pytest.raises(ValueError, match="n_images"):
        Threshold.from_dict({"value": 1.0, "false_alarm_rate": 0.01})
    with pytest.raises(dataclasses.FrozenInstanceError):
        thr.value = 0.0  # type: ignore[misc]
