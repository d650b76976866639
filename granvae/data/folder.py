"""Load an MVTec-AD style folder into the Data contract (layout: granvae.data.layout).

The folder is validated first (granvae.data.validate.validate_folder), and exactly the files
validation checked are read. Choices other modules see:

- names are paths relative to the root ("test/scratch/003.png"), so they survive moves;
- factors are unknown: shape (N, 0) and meta.factor_names == ();
- severity of a folder defect is unknown and set to 1.0 (the contract needs (0, 1]);
- a defect type without a ground_truth/<type> folder gets all-zero masks; with the folder,
  a missing mask is a validation error;
- val is carved from train/good by a seeded permutation, rows kept in file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from granvae.data.base import DatasetMeta, Split, make_split, take
from granvae.data.images import decode, mask_to_array, to_array
from granvae.data.layout import FolderEntry
from granvae.data.validate import validate_dataset, validate_folder

FOLDER_DEFECT_SEVERITY = 1.0


def _load_entries(entries: tuple[FolderEntry, ...], image_size: int, channels: int) -> Split:
    n = len(entries)
    images = np.zeros((n, channels, image_size, image_size), np.uint8)
    masks = np.zeros((n, image_size, image_size), np.uint8)
    for i, entry in enumerate(entries):
        images[i] = to_array(decode(entry.path), channels, image_size)
        if entry.mask_path is not None:
            masks[i] = mask_to_array(decode(entry.mask_path), image_size)
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


def load_mvtec(
    root: str | Path,
    image_size: int = 64,
    channels: int = 1,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[dict[str, Split], DatasetMeta]:
    """Validate, then load; raises DataValidationError listing every bad file."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    layout = validate_folder(root, image_size, channels)
    good = _load_entries(layout.train, image_size, channels)
    train_idx, val_idx = carve_val(len(good), val_fraction, seed)
    splits = {
        "train": take(good, train_idx),
        "val": take(good, val_idx),
        "test": _load_entries(layout.test, image_size, channels),
    }
    meta = DatasetMeta(
        name=layout.root.resolve().name,
        kind="folder",
        observation_shape=(channels, image_size, image_size),
        class_names=layout.class_names,
        factor_names=(),
        factor_sizes=(),
        seed=int(seed),
    )
    validate_dataset(splits, meta)
    return splits, meta
