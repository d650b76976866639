"""Every validation failure on a real broken file or array, named in the error, and refused
by the loader and the store alike."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from granvae.data import (
    DataValidationError,
    generate,
    load_mvtec,
    load_split,
    validate_folder,
    validate_split,
    write_dataset,
)
from granvae.data.store import _npz_bytes, _sha256, manifest_bytes, read_manifest
from granvae.data.to_folder import write_mvtec

SIZE = 32


@pytest.fixture(scope="module")
def generated():
    return generate("surfaces", 4, 1, 6, seed=0, image_size=SIZE, defect_fraction=0.5)


@pytest.fixture
def tree(tmp_path: Path, generated) -> Path:
    """A valid MVTec tree of generated surfaces; each test breaks one thing."""
    splits, meta = generated
    return write_mvtec(tmp_path / "part", splits, meta)


def _problems(root: Path, image_size: int = SIZE, channels: int = 1) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        validate_folder(root, image_size, channels)
    with pytest.raises(DataValidationError) as loaded:
        load_mvtec(root, image_size, channels)
    assert loaded.value.problems == info.value.problems  # the loader refuses the same files
    return info.value


def _noise_image(seed: int, size: int = 64, mode: str = "L") -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def test_valid_tree_passes(tree):
    layout = validate_folder(tree, SIZE, 1)
    assert len(layout.train) == 5 and len(layout.test) == 6


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file_is_named(tree, suffix):
    path = tree / "train/good" / f"cut{suffix}"
    _noise_image(1).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    error = _problems(tree)
    assert f"train/good/cut{suffix}" in str(error)
    assert "truncated" in str(error)


def test_garbage_bytes_with_png_name(tree):
    (tree / "test/good/garbage.png").write_bytes(b"\x89PNG not really" * 20)
    error = _problems(tree)
    assert error.problems[0][0] == "test/good/garbage.png"
    assert "unreadable" in error.problems[0][1]


@pytest.mark.parametrize(
    ("mode", "file_name", "expected"),
    [
        ("RGBA", "alpha.png", "mode RGBA has transparent pixels"),
        ("CMYK", "print.jpg", "mode CMYK"),
        ("I;16", "deep.png", "mode I;16"),
    ],
)
def test_refused_modes_are_named(tree, mode, file_name, expected):
    if mode == "I;16":
        pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16
        image = Image.fromarray(pixels)
    elif mode == "RGBA":  # transparent pixels (a fully opaque alpha is dropped, as on the edge)
        image = _noise_image(2, mode=mode)
        image.putalpha(_noise_image(5))
    else:
        image = _noise_image(2, mode=mode)
    image.save(tree / "train/good" / file_name)
    error = _problems(tree)
    assert [where for where, _ in error.problems] == [f"train/good/{file_name}"]
    assert expected in str(error)


def test_image_smaller_than_model_input(tree):
    _noise_image(3, size=16).save(tree / "test/good/tiny.png")
    error = _problems(tree)
    assert "test/good/tiny.png: 16x16 is smaller than the model input 32x32" in str(error)


def test_empty_class_folder(tree):
    (tree / "test/dent").mkdir()
    error = _problems(tree)
    assert ("test/dent", "empty class folder: no .png/.jpg/.jpeg images") in error.problems


def test_empty_train_good(tree):
    for path in (tree / "train/good").iterdir():
        path.unlink()
    assert "train/good: empty class folder" in str(_problems(tree))


def test_duplicate_across_train_and_test_names_both(tree):
    source = tree / "train/good/0001.png"
    # Same pixels, different file bytes: detection must work on decoded pixels.
    Image.open(source).save(tree / "test/good/again.png", compress_level=1)
    assert (tree / "test/good/again.png").read_bytes() != source.read_bytes()
    error = _problems(tree)
    assert error.problems == [
        ("test/good/again.png", "duplicate of train/good/0001.png (identical pixels in train)")
    ]


def test_missing_mask_is_named(tree):
    mask = next((tree / "ground_truth").rglob("*_mask.png"))
    mask.unlink()
    image = f"test/{mask.parent.name}/{mask.name.replace('_mask', '')}"
    error = _problems(tree)
    assert error.problems == [(image, f"mask missing: {mask.relative_to(tree).as_posix()}")]


def test_all_problems_are_reported_at_once(tree):
    (tree / "train/good/garbage.png").write_bytes(b"nothing")
    _noise_image(4, size=8).save(tree / "test/good/tiny.png")
    (tree / "test/dent").mkdir()
    where = {w for w, _ in _problems(tree).problems}
    assert where == {"train/good/garbage.png", "test/good/tiny.png", "test/dent"}


def test_error_survives_pickling_across_processes():
    error = DataValidationError([("a.png", "truncated"), ("test.severity", "NaN")])
    again = pickle.loads(pickle.dumps(error))
    assert again.problems == error.problems and str(again) == str(error)
    assert "a.png: truncated" in str(again) and isinstance(again, ValueError)


def test_truncation_guard_refuses_when_pillow_is_lenient(tree, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataValidationError, match="LOAD_TRUNCATED_IMAGES"):
        validate_folder(tree, SIZE, 1)


def test_granvae_leaves_pillow_strict(tree):
    load_mvtec(tree, SIZE, 1)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def _with(split, **changes):
    return dataclasses.replace(split, **changes)


def test_nan_severity_is_named_and_refused_by_the_store(tmp_path, generated):
    splits, meta = generated
    test = splits["test"]
    severity = test.severity.copy()
    severity[2] = np.nan
    broken = {**splits, "test": _with(test, severity=severity)}
    with pytest.raises(DataValidationError) as info:
        validate_split("test", broken["test"], meta)
    assert info.value.problems[0][0] == "test.severity"
    assert f"rows 2 ({test.names[2]})" in info.value.problems[0][1]
    assert "NaN/inf" in info.value.problems[0][1]
    with pytest.raises(DataValidationError, match="test.severity"):
        write_dataset(tmp_path / "ds", broken, meta)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("split_name", "field", "change", "expected"),
    [
        ("train", "images", lambda s: s.images.astype(np.float32), "train.images: dtype float32"),
        ("train", "labels", lambda s: np.ones_like(s.labels), "train must hold good images only"),
        ("test", "masks", lambda s: s.masks[:, :-1], "test.masks: shape"),
        ("test", "factors", lambda s: s.factors + 100, "test.factors: index outside"),
        ("val", "names", lambda s: (), "val.names"),
    ],
)
def test_array_problems_are_named(generated, split_name, field, change, expected):
    splits, meta = generated
    split = splits[split_name]
    with pytest.raises(DataValidationError, match=expected.replace("(", r"\(")):
        validate_split(split_name, _with(split, **{field: change(split)}), meta)


def test_loading_refuses_a_consistently_hashed_but_invalid_shard(tmp_path, generated):
    """A shard whose hash matches but whose content breaks the contract is still refused."""
    splits, meta = generated
    out = tmp_path / "ds"
    write_dataset(out, splits, meta)
    manifest = read_manifest(out)
    test = splits["test"]
    severity = test.severity.copy()
    severity[0] = np.inf
    data = _npz_bytes(_with(test, severity=severity))
    (out / "test-0.npz").write_bytes(data)
    for shard in manifest["shards"]:
        if shard["file"] == "test-0.npz":
            shard["sha256"] = _sha256(data)
    (out / "manifest.json").write_bytes(manifest_bytes(manifest))
    with pytest.raises(DataValidationError, match="test.severity"):
        load_split(out, "test")
