"""The MVTec-AD folder loader on real files written with Pillow (PNG and JPEG, L/RGB/P/1)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from granvae.data import generate, load_mvtec
from granvae.data.to_folder import write_mvtec

TRAIN = ("g0.png", "g1.png", "g2.jpg", "g3.png", "g4.png")


def _save(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _gray(value: int, size: int = 40) -> Image.Image:
    return Image.fromarray(np.full((size, size), value, np.uint8))


def _noise(seed: int, size: int = 40) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _square_mask(size: int = 40) -> Image.Image:
    mask = np.zeros((size, size), np.uint8)
    mask[10:20, 10:20] = 255
    return Image.fromarray(mask)


@pytest.fixture
def bottle(tmp_path: Path) -> Path:
    """A tiny MVTec tree: 5 train images in every accepted mode, 2 defect types."""
    root = tmp_path / "bottle"
    halves = np.zeros((40, 40), np.uint8)
    halves[:, :20] = 255
    _save(root / "train/good/g0.png", _gray(100))
    _save(root / "train/good/g1.png", Image.fromarray(halves))
    _save(root / "train/good/g2.jpg", Image.new("RGB", (48, 48), (200, 50, 50)))
    _save(root / "train/good/g3.png", _noise(1).convert("P"))
    _save(root / "train/good/g4.png", Image.fromarray(halves).convert("1"))
    _save(root / "test/good/t0.png", _gray(60))
    _save(root / "test/scratch/s0.png", _noise(2))
    _save(root / "test/scratch/s1.jpg", _noise(3))
    _save(root / "ground_truth/scratch/s0_mask.png", _square_mask())
    _save(root / "ground_truth/scratch/s1_mask.png", _square_mask())
    _save(root / "test/hole/h0.png", _noise(4))
    return root


def _by_name(splits) -> dict[str, tuple[str, int]]:
    return {n: (split, i) for split, s in splits.items() for i, n in enumerate(s.names)}


def test_loads_splits_classes_and_meta(bottle):
    splits, meta = load_mvtec(bottle, image_size=32, channels=1, val_fraction=0.2, seed=0)
    assert meta.name == "bottle" and meta.kind == "folder"
    assert meta.class_names == ("good", "hole", "scratch")
    assert meta.observation_shape == (1, 32, 32) and meta.factor_names == ()
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (4, 1, 4)
    good_names = set(splits["train"].names) | set(splits["val"].names)
    assert good_names == {f"train/good/{n}" for n in TRAIN}
    test = splits["test"]
    assert test.names == (
        "test/good/t0.png",
        "test/hole/h0.png",
        "test/scratch/s0.png",
        "test/scratch/s1.jpg",
    )
    assert test.labels.tolist() == [0, 1, 2, 2]
    assert test.severity.tolist() == [0.0, 1.0, 1.0, 1.0]
    assert test.factors.shape == (4, 0) and test.images.shape == (4, 1, 32, 32)


def test_masks_are_resized_nearest_and_missing_gt_folder_gives_zeros(bottle):
    splits, _ = load_mvtec(bottle, image_size=32, channels=1)
    masks = splits["test"].masks
    assert set(np.unique(masks)) == {0, 1}
    for k in (2, 3):  # scratch: source rows/cols 10..19 of 40 -> 8..15 of 32
        assert masks[k, 8:16, 8:16].all() and masks[k].sum() == 64
    assert not masks[0].any() and not masks[1].any()  # good, and hole without ground_truth


def test_images_are_resized_and_converted(bottle):
    splits, _ = load_mvtec(bottle, image_size=32, channels=1, val_fraction=0.0)
    where = _by_name(splits)
    image = {n: splits[s].images[i, 0].astype(int) for n, (s, i) in where.items()}
    assert (image["train/good/g0.png"] == 100).all()
    halves = image["train/good/g1.png"]
    assert (halves[:, :14] == 255).all() and (halves[:, 18:] == 0).all()
    assert abs(image["train/good/g2.jpg"].mean() - 95) < 3  # ITU-R 601 luma of (200, 50, 50)
    assert (image["train/good/g4.png"] == image["train/good/g1.png"]).all()  # bilevel halves


def test_rgb_loading_replicates_gray(bottle):
    splits, meta = load_mvtec(bottle, image_size=24, channels=3, val_fraction=0.0)
    assert meta.observation_shape == (3, 24, 24)
    where = _by_name(splits)
    split, i = where["train/good/g0.png"]
    gray = splits[split].images[i]
    assert gray.shape == (3, 24, 24) and (gray == 100).all()
    split, i = where["train/good/g2.jpg"]
    red = splits[split].images[i].reshape(3, -1).mean(axis=1)
    assert np.allclose(red, [200, 50, 50], atol=4)


def test_val_carve_is_deterministic_and_disjoint(bottle):
    a, _ = load_mvtec(bottle, image_size=32, val_fraction=0.4, seed=7)
    b, _ = load_mvtec(bottle, image_size=32, val_fraction=0.4, seed=7)
    assert a["val"].names == b["val"].names and len(a["val"]) == 2
    assert not set(a["val"].names) & set(a["train"].names)
    assert list(a["train"].names) == sorted(a["train"].names)  # file order kept


def test_generated_surfaces_survive_a_png_folder_round_trip(tmp_path):
    splits, meta = generate("surfaces", 4, 2, 9, seed=0, image_size=32)
    write_mvtec(tmp_path / "line", splits, meta)
    loaded, lmeta = load_mvtec(tmp_path / "line", image_size=32, val_fraction=0.0)
    expected_train = np.concatenate([splits["train"].images, splits["val"].images])
    assert np.array_equal(loaded["train"].images, expected_train)
    assert set(lmeta.class_names) == set(meta.class_names)
    test, got = splits["test"], loaded["test"]
    for k, cls in enumerate(meta.class_names):
        rows = test.labels == k
        got_rows = got.labels == lmeta.class_names.index(cls)
        assert np.array_equal(got.images[got_rows], test.images[rows])
        assert np.array_equal(got.masks[got_rows], test.masks[rows])


def test_import_says_what_it_resized_turned_grey_and_cannot_calibrate(bottle, tmp_path):
    """Issue 16: an 80x64 part resized, a colour JPEG turned grey and 1 calibration image, said
    by `granvae data import` (its own process) when it happens; a clean import says nothing."""
    import subprocess
    import sys

    _save(bottle / "train/good/g5.png", Image.fromarray(np.full((64, 80), 90, np.uint8)))
    cli = [str(Path(sys.executable).parent / "granvae"), "data", "import"]
    wide = {**os.environ, "COLUMNS": "400"}  # one notice per line
    done = subprocess.run([*cli, str(bottle), "--out", str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=120, env=wide)  # fmt: skip
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == 3, done.stdout
    assert "validation split: 1 good images (10% of 6" in notes[0] and ">= 99" in notes[0]
    assert "80x64" in notes[1] and "48x48" in notes[1] and "to 40x40" in notes[1]
    grey = "note: 5 colour or palette image(s) converted to grey"  # g2 g3 s0 s1 h0
    assert notes[2].startswith(grey)
    assert "g2.jpg" in notes[2] and "g0.png" not in notes[2]

    clean = tmp_path / "clean"
    for i in range(110):  # 0.9 x 110 = 99 held out: exactly enough for 1% (rank 99 of 99)
        _save(clean / f"train/good/g{i}.png", _gray(i))
    _save(clean / "test/good/t0.png", _gray(200))
    done = subprocess.run([*cli, str(clean), "--out", str(tmp_path / "clean-store"),
                           "--val-fraction", "0.9"],
                          capture_output=True, text=True, timeout=120, env=wide)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "note:" not in done.stdout, done.stdout
