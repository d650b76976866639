"""The dataset store: npz shards plus a manifest.json, the artifact DVC versions.

    <dir>/manifest.json          schema_version, meta fields, per split count and class
                                 counts, per shard {file, split, count, sha256}
    <dir>/<split>-<k>.npz        arrays of the Data contract (names as a unicode array)

Guarantees, and why:
- Same data, same bytes: shards are written with fixed zip timestamps (np.savez_compressed
  stamps the current time) and the manifest with sorted keys and no dates, so a DVC md5
  only changes when the data does.
- Never a half-written dataset: everything is written into a hidden sibling temp folder,
  fsynced, then renamed into place. A crash can leave a hidden `.<name>.tmp-*` sibling
  behind, never a partial `<dir>`. Replacing an existing dataset swaps it aside first, so
  between the two renames `<dir>` is briefly absent, never mixed.
- A folder that is not a dataset (anything besides manifest.json and .npz shards) is never
  overwritten.
- Every shard's sha256 is verified against the manifest before its arrays are used; the
  bytes hashed are the bytes parsed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from granvae.data.base import (
    DatasetMeta,
    DataValidationError,
    Split,
    class_counts,
    concat_splits,
    take,
)
from granvae.data.validate import SPLITS, validate_dataset, validate_split
from granvae.fsutil import swap_dir_into_place

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FIELDS = ("images", "labels", "factors", "masks", "severity", "names")
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
META_KEYS = tuple(f.name for f in fields(DatasetMeta))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _npz_bytes(split: Split) -> bytes:
    """A valid .npz (np.load reads it) whose bytes depend on the arrays only."""
    arrays = {field: getattr(split, field) for field in FIELDS[:-1]}
    arrays["names"] = np.asarray(list(split.names), dtype=np.str_)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asarray(arrays[key]), allow_pickle=False)
    return buffer.getvalue()


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _meta_fields(meta: DatasetMeta) -> dict[str, Any]:
    return {
        "name": meta.name,
        "kind": meta.kind,
        "observation_shape": [int(x) for x in meta.observation_shape],
        "class_names": list(meta.class_names),
        "factor_names": list(meta.factor_names),
        "factor_sizes": [int(x) for x in meta.factor_sizes],
        "seed": None if meta.seed is None else int(meta.seed),
    }


def meta_from_manifest(manifest: dict[str, Any]) -> DatasetMeta:
    return DatasetMeta(
        name=manifest["name"],
        kind=manifest["kind"],
        observation_shape=tuple(int(x) for x in manifest["observation_shape"]),
        class_names=tuple(manifest["class_names"]),
        factor_names=tuple(manifest["factor_names"]),
        factor_sizes=tuple(int(x) for x in manifest["factor_sizes"]),
        seed=manifest["seed"],
    )


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Canonical serialisation: sorted keys, fixed indent, trailing newline."""
    return (json.dumps(manifest, sort_keys=True, indent=2) + "\n").encode("utf-8")


def _write_into(folder: Path, splits: dict[str, Split], meta: DatasetMeta, shard_size: int):
    """Shards then manifest into `folder`; returns the manifest dict."""
    shards, summary = [], {}
    for name in SPLITS:
        split = splits[name]
        summary[name] = {"count": len(split), "class_counts": class_counts(split, meta.class_names)}
        starts = range(0, max(len(split), 1), shard_size)  # an empty split still gets a shard
        for k, start in enumerate(starts):
            part = take(split, np.arange(start, min(start + shard_size, len(split))))
            data = _npz_bytes(part)
            file_name = f"{name}-{k}.npz"
            _write_file(folder / file_name, data)
            shards.append(
                {"file": file_name, "split": name, "count": len(part), "sha256": _sha256(data)}
            )
    manifest = {"schema_version": SCHEMA_VERSION, **_meta_fields(meta)}
    manifest.update(splits=summary, shards=shards)
    _write_file(folder / MANIFEST, manifest_bytes(manifest))
    return manifest


def _refuse_non_dataset(out: Path) -> None:
    """Only an empty folder or a previous dataset may be replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; refusing to overwrite it")
    strangers = sorted(
        p.name for p in out.iterdir() if p.name != MANIFEST and not p.name.endswith(".npz")
    )
    has_files = any(out.iterdir())
    if strangers or (has_files and not (out / MANIFEST).is_file()):
        shown = ", ".join(strangers[:5]) or "no manifest.json"
        raise FileExistsError(f"{out} is not a granvae dataset ({shown}); refusing to overwrite")


def write_dataset(
    out_dir: str | Path, splits: dict[str, Split], meta: DatasetMeta, shard_size: int = 2048
) -> dict[str, Any]:
    """Validate, then write atomically; returns the manifest as written."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    validate_dataset(splits, meta)
    out = Path(out_dir)
    _refuse_non_dataset(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        manifest = _write_into(tmp, splits, meta, shard_size)
        directory = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        swap_dir_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataValidationError([(str(path), f"unreadable manifest ({exc})")]) from exc
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        version = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise DataValidationError(
            [(str(path), f"schema_version {version!r}, this code reads {SCHEMA_VERSION}")]
        )
    missing = [k for k in ("splits", "shards", *META_KEYS) if k not in manifest]
    if missing:
        raise DataValidationError([(str(path), f"missing keys {missing}")])
    if sorted(manifest["splits"]) != sorted(SPLITS):
        found = sorted(manifest["splits"])
        raise DataValidationError([(str(path), f"splits {found}, expected {list(SPLITS)}")])
    return manifest


def dataset_version(directory: str | Path) -> str:
    """sha256 of manifest.json: it pins every shard's hash, so it names the data exactly."""
    return _sha256((Path(directory) / MANIFEST).read_bytes())


def _read_shard(directory: Path, shard: dict[str, Any]) -> tuple[Split | None, list]:
    """Verify one shard's hash and count, then parse the very bytes that were hashed."""
    if Path(shard["file"]).name != shard["file"]:
        return None, [(shard["file"], "shard file names may not contain folders")]
    path = directory / shard["file"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [(shard["file"], f"unreadable shard ({exc})")]
    digest = _sha256(data)
    if digest != shard["sha256"]:
        return None, [
            (shard["file"], f"sha256 mismatch: manifest {shard['sha256']}, file {digest}")
        ]
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {field: archive[field] for field in FIELDS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        return None, [(shard["file"], f"not a valid shard ({type(exc).__name__}: {exc})")]
    names = tuple(str(s) for s in arrays.pop("names"))
    split = Split(names=names, **arrays)
    if len(split) != shard["count"]:
        return None, [(shard["file"], f"holds {len(split)} rows, manifest says {shard['count']}")]
    return split, []


def _load_verified(directory: Path, manifest: dict[str, Any], name: str) -> Split:
    """All shards of one split, or one error naming every bad shard."""
    if name not in manifest["splits"]:
        raise ValueError(f"no split {name!r} in {directory}; splits: {sorted(manifest['splits'])}")
    parts, problems = [], []
    for shard in manifest["shards"]:
        if shard["split"] == name:
            part, shard_problems = _read_shard(directory, shard)
            problems += shard_problems
            parts.append(part)
    if not parts and not problems:
        problems.append((f"{name}", "manifest lists no shards for this split"))
    if problems:
        raise DataValidationError(problems)
    split = concat_splits(parts)
    validate_split(name, split, meta_from_manifest(manifest))
    return split


def load_split(directory: str | Path, split: str) -> Split:
    directory = Path(directory)
    return _load_verified(directory, read_manifest(directory), split)


def load_dataset(directory: str | Path) -> tuple[dict[str, Split], DatasetMeta]:
    directory = Path(directory)
    manifest = read_manifest(directory)
    splits = {name: _load_verified(directory, manifest, name) for name in SPLITS}
    return splits, meta_from_manifest(manifest)


def check_dataset(directory: str | Path) -> dict[str, Any]:
    """Verify every shard and split, reporting all problems at once; returns a summary."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    listed = {shard["file"] for shard in manifest["shards"]}
    problems = [
        (p.name, "shard not listed in manifest.json")
        for p in sorted(directory.glob("*.npz"))
        if p.name not in listed
    ]
    splits = {}
    for name in SPLITS:
        try:
            splits[name] = _load_verified(directory, manifest, name)
        except DataValidationError as exc:
            problems += exc.problems
            continue
        expected = manifest["splits"][name]["count"]
        if len(splits[name]) != expected:
            problems.append((name, f"holds {len(splits[name])} images, manifest says {expected}"))
    if problems:
        raise DataValidationError(problems)
    meta = meta_from_manifest(manifest)
    return {
        "name": meta.name,
        "kind": meta.kind,
        "observation_shape": list(meta.observation_shape),
        "n_shards": len(manifest["shards"]),
        "version": dataset_version(directory),
        "splits": {
            name: {"count": len(s), "class_counts": class_counts(s, meta.class_names)}
            for name, s in splits.items()
        },
    }
