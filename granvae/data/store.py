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

Large images (docs/pipeline.md, "Working resolution"): a shard holds at most `shard_size`
rows and at most `shard_bytes` of image plus mask pixels (64 MiB: 2048 rows of 64x64, 32 of
1024x1024), so 64-px data sets shard exactly as before and a 1024-px set never makes a
2 GB shard. write_dataset_streamed takes rows on demand (an import decodes one shard's
files at a time); granvae.data.reader.open_split reads one split shard by shard, or only
the shards that hold the rows asked for, each still verified before use.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, fields
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
from granvae.data.provenance import STORE_PROVENANCE, check_file, manifest_entry
from granvae.data.validate import (
    SPLITS,
    meta_problems,
    split_problems,
    validate_dataset,
    validate_split,
)
from granvae.fsutil import swap_dir_into_place

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FIELDS = ("images", "labels", "factors", "masks", "severity", "names")
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
META_KEYS = tuple(f.name for f in fields(DatasetMeta))
SHARD_SIZE = 2048  # rows; the historical cap, kept so small data sets shard as they always did
SHARD_BYTES = 64 * 2**20  # image + mask pixels per shard, before compression


@dataclass(frozen=True)
class SplitSource:
    """Rows of one split made on demand, so a writer holds one shard, not the split.

    rows(start, stop) returns rows [start, stop) as a Split; count is the split's length.
    """

    count: int
    rows: Callable[[int, int], Split]


def in_memory(split: Split) -> SplitSource:
    return SplitSource(len(split), lambda a, b: take(split, np.arange(a, b)))


def rows_per_shard(meta: DatasetMeta, shard_size: int, shard_bytes: int) -> int:
    """Rows of one shard: bounded by count and by uncompressed image + mask bytes."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if shard_bytes < 1:
        raise ValueError(f"shard_bytes must be >= 1, got {shard_bytes}")
    c, h, w = (int(x) for x in meta.observation_shape)
    return max(1, min(shard_size, shard_bytes // ((c + 1) * h * w)))


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


def _write_into(
    folder: Path, sources: dict[str, SplitSource], meta: DatasetMeta, per_shard: int,
    origin: dict[str, Any] | None = None, provenance: tuple[bytes, int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Shards then manifest into `folder`, each shard validated as it is made; returns the
    manifest, or raises one DataValidationError naming every bad row of every shard.
    ``provenance``: (bytes, rows) of granvae.data.provenance, written beside the shards."""
    shards, summary, problems = [], {}, []
    for name in SPLITS:
        source = sources[name]
        counts = dict.fromkeys(meta.class_names, 0)
        starts = range(0, max(source.count, 1), per_shard)  # an empty split still gets a shard
        for k, start in enumerate(starts):
            part = source.rows(start, min(start + per_shard, source.count))
            problems += split_problems(name, part, meta)
            if problems:
                continue  # keep validating the rest; nothing here will be kept
            for cls, n in class_counts(part, meta.class_names).items():
                counts[cls] += n
            data = _npz_bytes(part)
            file_name = f"{name}-{k}.npz"
            _write_file(folder / file_name, data)
            shards.append(
                {"file": file_name, "split": name, "count": len(part), "sha256": _sha256(data)}
            )
        summary[name] = {"count": source.count, "class_counts": counts}
    if problems:
        raise DataValidationError(problems)
    manifest = {"schema_version": SCHEMA_VERSION, **_meta_fields(meta)}
    manifest.update(splits=summary, shards=shards)
    if origin is not None:  # what an import read, before resizing (granvae.data.frames)
        manifest["source"] = origin
    if provenance is not None:  # where line images came from (granvae.data.provenance)
        _write_file(folder / STORE_PROVENANCE, provenance[0])
        manifest["provenance"] = manifest_entry(*provenance)
    _write_file(folder / MANIFEST, manifest_bytes(manifest))
    return manifest


def _refuse_non_dataset(out: Path) -> None:
    """Only an empty folder or a previous dataset may be replaced."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; refusing to overwrite it")
    strangers = sorted(
        p.name
        for p in out.iterdir()
        if p.name not in (MANIFEST, STORE_PROVENANCE) and not p.name.endswith(".npz")
    )
    has_files = any(out.iterdir())
    if strangers or (has_files and not (out / MANIFEST).is_file()):
        shown = ", ".join(strangers[:5]) or "no manifest.json"
        raise FileExistsError(f"{out} is not a granvae dataset ({shown}); refusing to overwrite")


def write_dataset(
    out_dir: str | Path,
    splits: dict[str, Split],
    meta: DatasetMeta,
    shard_size: int = SHARD_SIZE,
    shard_bytes: int = SHARD_BYTES,
) -> dict[str, Any]:
    """Validate, then write atomically; returns the manifest as written."""
    validate_dataset(splits, meta)
    per_shard = rows_per_shard(meta, shard_size, shard_bytes)
    sources = {name: in_memory(split) for name, split in splits.items()}
    return _write_atomically(Path(out_dir), sources, meta, per_shard)


def write_dataset_streamed(
    out_dir: str | Path,
    sources: dict[str, SplitSource],
    meta: DatasetMeta,
    shard_size: int = SHARD_SIZE,
    shard_bytes: int = SHARD_BYTES,
    source: dict[str, Any] | None = None,
    provenance: tuple[bytes, int] | None = None,
) -> dict[str, Any]:
    """write_dataset for rows made on demand: the same bytes for the same rows, one shard in
    memory at a time; every shard is validated and nothing is kept unless all pass."""
    problems = meta_problems(meta)
    if sorted(sources) != sorted(SPLITS):
        problems.append(("splits", f"need exactly {list(SPLITS)}, got {sorted(sources)}"))
    if problems:
        raise DataValidationError(problems)
    per_shard = rows_per_shard(meta, shard_size, shard_bytes)
    return _write_atomically(Path(out_dir), sources, meta, per_shard, source, provenance)


def _write_atomically(
    out: Path, sources: dict[str, SplitSource], meta: DatasetMeta, per_shard: int,
    source: dict[str, Any] | None = None, provenance: tuple[bytes, int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    _refuse_non_dataset(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        manifest = _write_into(tmp, sources, meta, per_shard, source, provenance)
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


def _split_shards(directory: Path, manifest: dict[str, Any], name: str) -> list[dict]:
    if name not in manifest["splits"]:
        raise ValueError(f"no split {name!r} in {directory}; splits: {sorted(manifest['splits'])}")
    return [shard for shard in manifest["shards"] if shard["split"] == name]


def _load_verified(directory: Path, manifest: dict[str, Any], name: str) -> Split:
    """All shards of one split, or one error naming every bad shard."""
    parts, problems = [], []
    for shard in _split_shards(directory, manifest, name):
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
    """One split in memory; the other splits' shards are not read."""
    directory = Path(directory)
    return _load_verified(directory, read_manifest(directory), split)


def load_dataset(directory: str | Path) -> tuple[dict[str, Split], DatasetMeta]:
    directory = Path(directory)
    manifest = read_manifest(directory)
    splits = {name: _load_verified(directory, manifest, name) for name in SPLITS}
    return splits, meta_from_manifest(manifest)


def _check_split(directory: Path, manifest: dict[str, Any], name: str) -> tuple[dict, list]:
    """Counts of one split, verified one shard at a time; (summary, problems)."""
    meta = meta_from_manifest(manifest)
    shards = _split_shards(directory, manifest, name)
    if not shards:
        return {}, [(name, "manifest lists no shards for this split")]
    counts, problems, total = dict.fromkeys(meta.class_names, 0), [], 0
    for shard in shards:
        part, shard_problems = _read_shard(directory, shard)
        problems += shard_problems
        if part is None:
            continue
        problems += split_problems(name, part, meta)
        total += len(part)
        for cls, n in class_counts(part, meta.class_names).items():
            counts[cls] += n
    expected = manifest["splits"][name]["count"]
    if not problems and total != expected:
        problems.append((name, f"holds {total} images, manifest says {expected}"))
    return {"count": total, "class_counts": counts}, problems


def check_dataset(directory: str | Path) -> dict[str, Any]:
    """Verify every shard and split, reporting all problems at once; returns a summary.
    Reads one shard at a time, so checking a large data set needs one shard's memory."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    listed = {shard["file"] for shard in manifest["shards"]}
    problems = [
        (p.name, "shard not listed in manifest.json")
        for p in sorted(directory.glob("*.npz"))
        if p.name not in listed
    ]
    problems += meta_problems(meta_from_manifest(manifest))
    if "provenance" in manifest:
        problems += check_file(directory, manifest["provenance"])
    summaries = {}
    for name in SPLITS:
        summaries[name], split_problems_ = _check_split(directory, manifest, name)
        problems += split_problems_
    if problems:
        raise DataValidationError(problems)
    meta = meta_from_manifest(manifest)
    return {
        "name": meta.name,
        "kind": meta.kind,
        "observation_shape": list(meta.observation_shape),
        "n_shards": len(manifest["shards"]),
        "version": dataset_version(directory),
        "splits": summaries,
    }
