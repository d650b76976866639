"""Data at working resolution (issue 7): native and chosen sizes, mixed-size folders,
byte-bounded shards, lazy split reading, and generated parts with defects of a size in px."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from granvae.cli import app
from granvae.data import (
    DataValidationError,
    generate,
    import_mvtec,
    load_mvtec,
    load_split,
    open_split,
    read_manifest,
    write_dataset,
)
from granvae.data.defects import _segment_distance, render_defect
from granvae.data.store import rows_per_shard
from granvae.data.surfaces import Surfaces


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _noise(seed: int, hw: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, hw, dtype=np.uint8)


def _part(root: Path, hw: tuple[int, int], odd: dict[str, tuple[int, int]] | None = None) -> Path:
    """An MVTec tree of noise images at (H, W); `odd` gives some files another size."""
    odd = odd or {}
    files = ["train/good/0.png", "train/good/1.png", "train/good/2.png", "train/good/3.png"]
    files += ["test/good/0.png", "test/dent/0.png", "test/dent/1.png"]
    for k, name in enumerate(files):
        size = odd.get(name, hw)
        _save(root / name, _noise(k, size))
        if name.startswith("test/dent/"):
            mask = np.zeros(size, np.uint8)
            mask[2:6, 3:9] = 255  # a 4x6 (HxW) defect near the top-left corner
            _save(root / "ground_truth/dent" / f"{Path(name).stem}_mask.png", mask)
    return root


def test_native_resolution_keeps_a_non_square_size(tmp_path):
    root = _part(tmp_path / "wide", (40, 72))
    splits, meta = load_mvtec(root, val_fraction=0.25)
    assert meta.observation_shape == (1, 40, 72)
    assert splits["train"].images.shape[1:] == (1, 40, 72)
    assert splits["test"].masks.shape[1:] == (40, 72)
    pixels = np.asarray(Image.open(root / "test/dent/1.png"))
    row = splits["test"].names.index("test/dent/1.png")
    assert np.array_equal(splits["test"].images[row, 0], pixels)  # not resampled at all
    assert splits["test"].masks[row].sum() == 24 and splits["test"].masks[row, 2:6, 3:9].all()


def test_a_chosen_size_resizes_images_and_masks_nearest(tmp_path):
    root = _part(tmp_path / "wide", (40, 72))
    splits, meta = load_mvtec(root, image_size=32, val_fraction=0.0)
    assert meta.observation_shape == (1, 32, 32)
    assert set(np.unique(splits["test"].masks)) == {0, 1}


def test_mixed_sizes_are_resized_to_the_common_size(tmp_path):
    root = _part(tmp_path / "mixed", (48, 48), {"train/good/2.png": (64, 80)})
    splits, meta = load_mvtec(root, val_fraction=0.0, mixed="resize")
    assert meta.observation_shape == (1, 48, 48)
    row = splits["train"].names.index("train/good/2.png")
    assert splits["train"].images[row].shape == (1, 48, 48)


def test_mixed_sizes_refused_name_every_odd_file_and_write_nothing(tmp_path):
    odd = {"train/good/2.png": (64, 80), "test/dent/1.png": (50, 48)}
    root = _part(tmp_path / "mixed", (48, 48), odd)
    out = tmp_path / "store"
    with pytest.raises(DataValidationError) as info:
        import_mvtec(root, out, mixed="refuse")
    assert sorted(info.value.problems) == [
        ("test/dent/1.png", "48x50 differs from the folder's 48x48 (mixed: refuse)"),
        ("train/good/2.png", "80x64 differs from the folder's 48x48 (mixed: refuse)"),
    ]
    assert not out.exists() and list(tmp_path.iterdir()) == [root]


def test_an_image_smaller_than_the_working_resolution_is_named(tmp_path):
    root = _part(tmp_path / "mixed", (48, 48), {"test/good/0.png": (40, 48)})
    with pytest.raises(DataValidationError, match="test/good/0.png: 48x40 is smaller than"):
        load_mvtec(root)


def test_cli_import_native_and_refuse(tmp_path):
    root = _part(tmp_path / "wide", (40, 72))
    ok = CliRunner().invoke(app, ["data", "import", str(root), "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    assert read_manifest(tmp_path / "a")["observation_shape"] == [1, 40, 72]
    sized = ["data", "import", str(root), "--out", str(tmp_path / "b"), "--image-size", "32"]
    assert CliRunner().invoke(app, sized).exit_code == 0
    assert read_manifest(tmp_path / "b")["observation_shape"] == [1, 32, 32]
    mixed = _part(tmp_path / "mixed", (48, 48), {"train/good/1.png": (64, 64)})
    args = ["data", "import", str(mixed), "--out", str(tmp_path / "c"), "--mixed", "refuse"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "train/good/1.png: 64x64 differs" in refused.output
    assert not (tmp_path / "c").exists()


def test_streamed_import_writes_the_same_bytes_as_load_then_write(tmp_path):
    root = _part(tmp_path / "wide", (40, 72))
    write_dataset(tmp_path / "a", *load_mvtec(root, val_fraction=0.25), shard_bytes=2 * 5760)
    import_mvtec(root, tmp_path / "b", val_fraction=0.25, shard_bytes=2 * 5760)
    a, b = sorted((tmp_path / "a").iterdir()), sorted((tmp_path / "b").iterdir())
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 6  # 2 rows a shard
    shards = [(x, y) for x, y in zip(a, b, strict=True) if x.suffix == ".npz"]
    assert len(shards) == 5 and all(x.read_bytes() == y.read_bytes() for x, y in shards)
    # the manifests differ only by import's record of the source files (issue 15)
    ma, mb = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("a", "b"))
    assert mb.pop("source")["sizes"] == [[40, 72]] and ma == mb


def test_shards_are_bounded_in_bytes(tmp_path):
    splits, meta = generate("surfaces", 9, 1, 4, seed=0, image_size=64)
    manifest = write_dataset(tmp_path / "ds", splits, meta, shard_bytes=3 * 2 * 64 * 64)
    assert [s["count"] for s in manifest["shards"] if s["split"] == "train"] == [3, 3, 3]
    for shard in manifest["shards"]:
        assert shard["count"] * 2 * 64 * 64 <= 3 * 2 * 64 * 64
    big = type(meta)(**{**meta.__dict__, "observation_shape": (1, 1024, 1024)})
    assert rows_per_shard(big, 2048, 64 * 2**20) == 32  # 64 MiB, not 2048 rows (4 GiB)
    assert rows_per_shard(meta, 2048, 64 * 2**20) == 2048  # 64-px sets shard as before


def test_one_split_loads_without_the_others(tmp_path):
    splits, meta = generate("surfaces", 10, 2, 6, seed=3, image_size=32)
    write_dataset(tmp_path / "ds", splits, meta, shard_size=4)
    for shard in [*(tmp_path / "ds").glob("test-*.npz"), *(tmp_path / "ds").glob("val-*.npz")]:
        shard.unlink()
    assert np.array_equal(load_split(tmp_path / "ds", "train").images, splits["train"].images)
    reader = open_split(tmp_path / "ds", "train")
    assert len(reader) == 10 and reader.n_shards == 3
    (tmp_path / "ds" / "train-0.npz").unlink()  # rows 4..9 live in train-1 and train-2
    rows = reader.read([9, 4, 5])
    assert np.array_equal(rows.images, splits["train"].images[[9, 4, 5]])
    assert rows.names == tuple(splits["train"].names[i] for i in (9, 4, 5))
    with pytest.raises(DataValidationError, match="train-0.npz: unreadable shard"):
        reader.read([0])
    raw = bytearray((tmp_path / "ds" / "train-2.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "ds" / "train-2.npz").write_bytes(bytes(raw))
    with pytest.raises(DataValidationError, match="train-2.npz: sha256 mismatch"):
        reader.read([9])  # verified again on every read, never trusted from before


def test_bounded_segment_distance_matches_the_full_grid():
    rng = np.random.default_rng(0)
    segments = rng.uniform(10, 50, size=(150, 2, 2))
    h, w = 64, 72
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    a, ab = segments[:, 0][:, None], (segments[:, 1] - segments[:, 0])[:, None]
    t = np.clip(((points[None] - a) * ab).sum(-1) / np.maximum((ab**2).sum(-1), 1e-12), 0, 1)
    full = np.sqrt(((points[None] - (a + t[..., None] * ab)) ** 2).sum(-1)).min(0).reshape(h, w)
    bounded = _segment_distance(h, w, segments, reach=1.5)
    near = full <= 1.5
    assert near.sum() > 100 and np.array_equal(bounded[near], full[near])
    assert (bounded[~near] > 1.5).all()


@pytest.mark.parametrize("cls", ["blob", "scratch", "crack"])
def test_a_6_px_defect_on_a_512_px_part(cls):
    surfaces = Surfaces(512)
    rng = np.random.default_rng(5)
    factors = surfaces.sample_factors(1, rng)
    clean = surfaces.sample_observations_from_factors(factors, rng)[0]
    region = surfaces.part_region(factors)[0]
    centre = np.random.default_rng(11).uniform(0.3, 0.7, size=2) * 512  # render's first draw
    image, mask = render_defect(clean, cls, 1.0, np.random.default_rng(11), region, defect_px=6)
    ys, xs = np.nonzero(mask)
    extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
    assert mask.shape == (512, 512) and 3 <= extent <= 9, extent
    assert abs(xs.mean() + 0.5 - centre[0]) < 6 and abs(ys.mean() + 0.5 - centre[1]) < 6
    assert np.array_equal(image[0] != clean[0], mask.astype(bool))


def test_generated_512_px_surfaces_with_6_px_defects():
    splits, meta = generate("surfaces", 1, 1, 4, seed=0, image_size=512, defect_px=6)
    test = splits["test"]
    assert meta.observation_shape == (1, 512, 512) and test.masks.shape == (4, 512, 512)
    for i in np.flatnonzero(test.labels):
        ys, xs = np.nonzero(test.masks[i])
        assert 1 <= max(np.ptp(ys), np.ptp(xs)) + 1 <= 9
    default, _ = generate("surfaces", 1, 1, 4, seed=0, image_size=512)
    big = [default["test"].masks[i].sum() for i in np.flatnonzero(default["test"].labels)]
    assert min(big) > 4 * max(test.masks[i].sum() for i in np.flatnonzero(test.labels))


def test_cli_make_surfaces_at_256_px_with_small_defects(tmp_path):
    args = ["data", "make", "surfaces", "--out", str(tmp_path / "s"), "--n", "2", "--n-val", "1"]
    args += ["--n-test", "4", "--image-size", "256", "--defect-px", "6"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    test = load_split(tmp_path / "s", "test")
    assert test.masks.shape == (4, 256, 256) and test.labels.any()
    assert all(0 < test.masks[i].sum() <= 60 for i in np.flatnonzero(test.labels))
    bad = CliRunner().invoke(app, [*args[:4], str(tmp_path / "t"), "--defect-px", "0"])
    assert bad.exit_code == 2 and "defect_px must be > 0" in bad.output
