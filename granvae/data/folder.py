"""Load an MVTec-AD style folder into the Data contract (layout: granvae.data.layout).

The folder is validated first (granvae.data.validate.validate_folder), and exactly the files
validation checked are read. Choices other modules see:

- names are paths relative to the root ("test/scratch/003.png"), so they survive moves;
- factors are unknown: shape (N, 0) and meta.factor_names == ();
- severity of a folder defect is unknown and set to 1.0 (the contract needs (0, 1]);
- a defect type without a ground_truth/<type> folder gets all-zero masks; with the folder,
  a missing mask is a validation error;
- val is carved from train/good by a seeded permutation, rows kept in file order;
- the working resolution is the images' own (image_size None, the default) or a chosen
  size, and a folder of mixed sizes is resized or refused (granvae.data.validate).

load_mvtec returns the splits in memory; import_mvtec writes the store directly, decoding
one shard's files at a time, for folders too large to hold (same bytes either way).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from granvae.data.base import DatasetMeta, Split, make_split, take
from granvae.data.frames import source_block
from granvae.data.images import MAX_PIXELS, Size, decode, mask_to_array, to_array
from granvae.data.import_notices import import_notices
from granvae.data.layout import FolderEntry, FolderLayout
from granvae.data.provenance import folder_rows, rows_bytes
from granvae.data.store import SHARD_BYTES, SHARD_SIZE, SplitSource, write_dataset_streamed
from granvae.data.validate import validate_dataset, validate_folder

FOLDER_DEFECT_SEVERITY = 1.0


def _load_entries(
    entries: tuple[FolderEntry, ...], hw: tuple[int, int], channels: int, bit_depth: int = 8
) -> Split:
    n = len(entries)
    images = np.zeros((n, channels, *hw), np.uint8)
    masks = np.zeros((n, *hw), np.uint8)
    for i, entry in enumerate(entries):
        images[i] = to_array(decode(entry.path), channels, hw, bit_depth)
        if entry.mask_path is not None:
            masks[i] = mask_to_array(decode(entry.mask_path), hw)
    labels = np.array([e.label for e in entries], dtype=np.int64)
    severity = np.where(labels > 0, FOLDER_DEFECT_SEVERITY, 0.0).astype(np.float32)
    names = [e.name for e in entries]
    return make_split(images, labels, None, masks, severity, names, n_factors=0)


def carve_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx), sorted; keeps at least one training image."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if val_fraction > 0.0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _validated(
    root: str | Path, image_size: Size | None, channels: int, val_fraction: float, mixed: str,
    bit_depth: int = 8, max_pixels: int = MAX_PIXELS,
) -> tuple[FolderLayout, tuple[int, int]]:  # fmt: skip
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    layout = validate_folder(root, image_size, channels, mixed, bit_depth, max_pixels)
    assert layout.working_hw is not None  # a valid folder has at least one image
    return layout, layout.working_hw


def _meta(layout: FolderLayout, hw: tuple[int, int], channels: int, seed: int) -> DatasetMeta:
    return DatasetMeta(
        name=layout.root.resolve().name,
        kind="folder",
        observation_shape=(channels, *hw),
        class_names=layout.class_names,
        factor_names=(),
        factor_sizes=(),
        seed=int(seed),
    )


def load_mvtec(
    root: str | Path,
    image_size: Size | None = None,
    channels: int = 1,
    val_fraction: float = 0.1,
    seed: int = 0,
    mixed: str = "resize",
) -> tuple[dict[str, Split], DatasetMeta]:
    """Validate, then load; raises DataValidationError listing every bad file.

    image_size: None keeps the images' own (H, W); an int N or (H, W) resizes to it.
    mixed: "resize" | "refuse" for a folder whose images differ in size.
    """
    layout, hw = _validated(root, image_size, channels, val_fraction, mixed)
    good = _load_entries(layout.train, hw, channels)
    train_idx, val_idx = carve_val(len(good), val_fraction, seed)
    splits = {
        "train": take(good, train_idx),
        "val": take(good, val_idx),
        "test": _load_entries(layout.test, hw, channels),
    }
    meta = _meta(layout, hw, channels, seed)
    validate_dataset(splits, meta)
    return splits, meta


def _source(
    entries: tuple[FolderEntry, ...], hw: tuple[int, int], channels: int, bit_depth: int
) -> SplitSource:
    return SplitSource(
        len(entries), lambda a, b: _load_entries(entries[a:b], hw, channels, bit_depth)
    )


def import_mvtec(
    root: str | Path,
    out_dir: str | Path,
    image_size: Size | None = None,
    channels: int = 1,
    val_fraction: float = 0.1,
    seed: int = 0,
    mixed: str = "resize",
    shard_bytes: int = SHARD_BYTES,
    bit_depth: int = 8,
    max_pixels: int = MAX_PIXELS,
) -> dict:
    """load_mvtec + write_dataset without holding the data set: validate every file, then
    decode and write one shard at a time. Returns the manifest; the arrays equal
    load_mvtec(...)'s for the same arguments. The manifest's ``source`` block records what
    the images were before import (sizes, bit depth and window, channels): the exporter turns
    it into the bundle's frame contract (granvae.data.frames).

    bit_depth: 8, or a 16-bit mono camera's depth (e.g. 12: window 0..4095 -> 0..255).
    max_pixels: header-checked cap per image, before any pixel is decoded.
    A folder filled by ``granvae ingest-line`` has line_provenance.jsonl: the rows of the
    imported images go into the store as provenance.jsonl (granvae.data.provenance).
    The returned manifest also has ``notices`` (granvae.data.import_notices: resized, colour
    turned grey, too few images to calibrate); they are said, not stored."""
    layout, hw = _validated(root, image_size, channels, val_fraction, mixed, bit_depth,
                            max_pixels)  # fmt: skip
    train_idx, val_idx = carve_val(len(layout.train), val_fraction, seed)
    sources = {
        "train": _source(tuple(layout.train[i] for i in train_idx), hw, channels, bit_depth),
        "val": _source(tuple(layout.train[i] for i in val_idx), hw, channels, bit_depth),
        "test": _source(layout.test, hw, channels, bit_depth),
    }
    meta = _meta(layout, hw, channels, seed)
    source = source_block(layout.source_hw, hw, bit_depth, channels)
    rows = folder_rows(root, (e.name for e in (*layout.train, *layout.test)))
    provenance = (rows_bytes(rows), len(rows)) if rows else None
    manifest = write_dataset_streamed(out_dir, sources, meta, SHARD_SIZE, shard_bytes, source,
                                      provenance)  # fmt: skip
    return {**manifest, "notices": import_notices(layout, manifest, channels, val_fraction)}
