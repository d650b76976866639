"""The dataset store: exact round trips, tamper detection, atomic writes, stable bytes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from granvae.data import (
    DataValidationError,
    check_dataset,
    dataset_version,
    generate,
    load_dataset,
    load_split,
    read_manifest,
    write_dataset,
)

FIELDS = ("images", "labels", "factors", "masks", "severity")


@pytest.fixture(scope="module")
def data():
    # val is empty on purpose: an empty split must survive the round trip with its shapes.
    return generate("surfaces", 7, 0, 9, seed=1, image_size=32)


def _assert_same(a, b) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        for field in FIELDS:
            x, y = getattr(a[name], field), getattr(b[name], field)
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), field
        assert a[name].names == b[name].names


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_round_trip_across_several_shards(tmp_path, data):
    splits, meta = data
    out = tmp_path / "ds"
    write_dataset(out, splits, meta, shard_size=3)
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "test-0.npz",
        "test-1.npz",
        "test-2.npz",
        "train-0.npz",
        "train-1.npz",
        "train-2.npz",
        "val-0.npz",
    ]
    loaded, loaded_meta = load_dataset(out)
    _assert_same(loaded, splits)
    assert loaded_meta == meta
    assert list(loaded) == ["train", "val", "test"]
    _assert_same({"test": load_split(out, "test")}, {"test": splits["test"]})


def test_shapes_dataset_keeps_its_factors(tmp_path):
    splits, meta = generate("shapes", 5, 2, 3, seed=9, image_size=32)
    write_dataset(tmp_path / "ds", splits, meta)
    loaded, loaded_meta = load_dataset(tmp_path / "ds")
    _assert_same(loaded, splits)
    assert loaded_meta.factor_sizes == (3, 6, 40, 32, 32) and loaded_meta.seed == 9


def test_manifest_layout(tmp_path, data):
    splits, meta = data
    returned = write_dataset(tmp_path / "ds", splits, meta, shard_size=4)
    text = (tmp_path / "ds" / "manifest.json").read_text()
    manifest = read_manifest(tmp_path / "ds")
    assert manifest == returned
    assert text == json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    assert manifest["schema_version"] == 1
    assert manifest["class_names"] == ["good", "blob", "scratch", "crack"]
    assert manifest["observation_shape"] == [1, 32, 32] and manifest["seed"] == 1
    test_counts = np.bincount(splits["test"].labels, minlength=4).tolist()
    assert manifest["splits"]["test"] == {
        "count": 9,
        "class_counts": dict(zip(meta.class_names, test_counts, strict=True)),
    }
    shard = manifest["shards"][0]
    assert shard["file"] == "train-0.npz" and shard["split"] == "train" and shard["count"] == 4
    assert sum(s["count"] for s in manifest["shards"] if s["split"] == "train") == 7


def test_tampered_shard_is_named(tmp_path, data):
    splits, meta = data
    out = tmp_path / "ds"
    write_dataset(out, splits, meta, shard_size=3)
    shard = out / "test-1.npz"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataValidationError) as info:
        load_split(out, "test")
    assert info.value.problems[0][0] == "test-1.npz"
    assert "sha256 mismatch" in info.value.problems[0][1]
    assert len(load_split(out, "train")) == 7  # untouched splits still load
    with pytest.raises(DataValidationError, match="test-1.npz: sha256 mismatch"):
        check_dataset(out)


def test_missing_and_unlisted_shards_are_named(tmp_path, data):
    splits, meta = data
    out = tmp_path / "ds"
    write_dataset(out, splits, meta, shard_size=3)
    (out / "train-1.npz").rename(out / "train-9.npz")
    with pytest.raises(DataValidationError) as info:
        check_dataset(out)
    where = [w for w, _ in info.value.problems]
    assert where == ["train-9.npz", "train-1.npz"]


def test_check_dataset_summarises(tmp_path, data):
    splits, meta = data
    write_dataset(tmp_path / "ds", splits, meta)
    summary = check_dataset(tmp_path / "ds")
    assert summary["splits"]["train"] == {
        "count": 7,
        "class_counts": {"good": 7, "blob": 0, "scratch": 0, "crack": 0},
    }
    assert summary["splits"]["val"]["count"] == 0
    assert summary["version"] == dataset_version(tmp_path / "ds")


def test_same_data_gives_same_bytes(tmp_path, data):
    splits, meta = data
    write_dataset(tmp_path / "a", splits, meta, shard_size=4)
    write_dataset(tmp_path / "b", splits, meta, shard_size=4)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    with zipfile.ZipFile(tmp_path / "a" / "train-0.npz") as archive:  # np.savez stamps the clock
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    before = dataset_version(tmp_path / "a")
    write_dataset(tmp_path / "a", splits, meta, shard_size=4)
    assert dataset_version(tmp_path / "a") == before


def test_refuses_to_overwrite_a_folder_that_is_not_a_dataset(tmp_path, data):
    splits, meta = data
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        write_dataset(precious, splits, meta)
    assert (precious / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


def test_failed_write_leaves_no_folder_and_keeps_the_old_dataset(tmp_path, data):
    splits, meta = data
    severity = splits["test"].severity.copy()
    severity[0] = np.nan
    broken = {**splits, "test": replace(splits["test"], severity=severity)}
    with pytest.raises(DataValidationError):
        write_dataset(tmp_path / "new", broken, meta)
    assert list(tmp_path.iterdir()) == []
    write_dataset(tmp_path / "ds", splits, meta)
    before = _files(tmp_path / "ds")
    with pytest.raises(DataValidationError):
        write_dataset(tmp_path / "ds", broken, meta)
    assert _files(tmp_path / "ds") == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_replacing_a_dataset_leaves_no_debris(tmp_path, data):
    splits, meta = data
    other, other_meta = generate("surfaces", 3, 1, 2, seed=5, image_size=32)
    write_dataset(tmp_path / "ds", splits, meta)
    write_dataset(tmp_path / "ds", other, other_meta)
    loaded, loaded_meta = load_dataset(tmp_path / "ds")
    _assert_same(loaded, other)
    assert loaded_meta.seed == 5
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


CRASHING_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from granvae.data import DatasetMeta, write_dataset
    from granvae.data.base import make_split

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (6000, 1, 64, 64), dtype=np.uint8)  # incompressible, slow
    splits = {
        "train": make_split(noise, names=[f"n{i}" for i in range(len(noise))]),
        "val": make_split(noise[:0]),
        "test": make_split(noise[:0]),
    }
    meta = DatasetMeta("noise", "test", (1, 64, 64), ("good",), (), (), 0)
    write_dataset(sys.argv[1], splits, meta, shard_size=20)
    """
)


def _written_since(folder: Path, start_ns: int) -> bool:
    """Has any shard been written anywhere under folder (temp folders included)?"""
    try:
        return any(p.stat().st_mtime_ns >= start_ns for p in folder.rglob("*.npz"))
    except FileNotFoundError:  # a folder or shard vanished mid-scan: it was being written
        return True


def test_a_writer_killed_mid_write_never_leaves_a_partial_dataset(tmp_path, data):
    splits, meta = data
    out = tmp_path / "ds"
    write_dataset(out, splits, meta)
    before = dataset_version(out)
    started = time.time_ns()
    writer = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(out)])
    deadline = time.monotonic() + 60
    while not _written_since(tmp_path, started) and writer.poll() is None:
        assert time.monotonic() < deadline, "writer never started writing"
        time.sleep(0.005)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL, "writer finished before it could be killed"
    assert dataset_version(out) == before
    _assert_same(load_dataset(out)[0], splits)
    visible = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert visible == ["ds"]  # only a hidden temp folder may remain after a crash
