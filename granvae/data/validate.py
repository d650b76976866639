"""Validation before any training: every problem collected, then one DataValidationError.

A retraining run that dies an hour in on a corrupt file, or silently trains on defects,
costs more than reading every file twice. Two entry points:

    validate_folder(root, image_size, channels, mixed)  files of an MVTec-style folder
    validate_split(name, split, meta)                   arrays against the Data contract

Working resolution (docs/pipeline.md, "Working resolution"): `image_size` None keeps the
images' own size (H, W; non-square is fine), the size most images share, ties to the first
file; an int N or (H, W) brings every image there. `mixed` says what a folder whose images
differ in size gets: "resize" (the default, today's behaviour and the edge's input.resize
"bilinear") brings each to the working resolution; "refuse" names every file whose size
differs from the folder's common size, for lines where a new size means a new camera.
Either way an image smaller than the working resolution is refused: upsampling invents
detail a defect detector would then learn.

Duplicate detection runs on folders only (train vs test, by decoded pixels): generated
splits sample factors with replacement, so an exact repeat there is expected, not leakage.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import ImageFile

from granvae.data.base import GOOD, DatasetMeta, DataValidationError, Split
from granvae.data.images import (
    DEEP_MODES,
    MASK_MODES,
    MAX_PIXELS,
    ImageTooLarge,
    Size,
    as_hw,
    decode,
    mode_problem,
    pixel_digest,
)
from granvae.data.layout import FolderEntry, FolderLayout, Problem, scan_mvtec

SPLITS = ("train", "val", "test")
GOOD_ONLY_SPLITS = ("train", "val")
MAX_LISTED = 5  # offending rows named per problem; enough to find them, short enough to read
MIXED = ("resize", "refuse")


def _check_image(
    entry: FolderEntry, bit_depth: int = 8, max_pixels: int = MAX_PIXELS,
    colour: list[str] | None = None,
) -> tuple[list[Problem], str | None, tuple]:  # fmt: skip
    """Problems of one image file, its pixel digest and its (width, height); a colour file's
    name goes into ``colour`` (import says when it turns colour into grey)."""
    try:
        image = decode(entry.path, max_pixels)
    except ImageTooLarge as exc:
        return [(entry.name, f"image too large: {exc}")], None, ()
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error...
        return (
            [(entry.name, f"unreadable or truncated image ({type(exc).__name__}: {exc})")],
            None,
            (),
        )
    reason = mode_problem(image, bit_depth=bit_depth)
    if colour is not None and image.mode not in ("L", "1", *DEEP_MODES, "LA", "La"):
        colour.append(entry.name)
    return ([(entry.name, reason)] if reason else []), pixel_digest(image), image.size


def _size_problems(
    sizes: dict[str, tuple[int, int]], image_size: Size | None, mixed: str
) -> tuple[list[Problem], tuple[int, int] | None]:
    """Mixed-size and too-small files, and the working (H, W); sizes are (width, height)."""
    if not sizes:
        return [], None if image_size is None else as_hw(image_size)
    common_w, common_h = Counter(sizes.values()).most_common(1)[0][0]
    working = (common_h, common_w) if image_size is None else as_hw(image_size)
    height, width = working
    problems = []
    for name, (w, h) in sizes.items():
        if mixed == "refuse" and (w, h) != (common_w, common_h):
            problems.append(
                (name, f"{w}x{h} differs from the folder's {common_w}x{common_h} (mixed: refuse)")
            )
        elif w < width or h < height:
            problems.append(
                (name, f"{w}x{h} is smaller than the model input {width}x{height} (the working "
                 "resolution; upsampling would invent detail)")
            )  # fmt: skip
    return problems, working


def _check_mask(entry: FolderEntry, root: Path, image_wh: tuple) -> list[Problem]:
    if entry.mask_path is None:
        return []
    name = entry.mask_path.relative_to(root).as_posix()
    try:
        mask = decode(entry.mask_path)
    except Exception as exc:
        return [(name, f"unreadable or truncated mask ({type(exc).__name__}: {exc})")]
    problems = []
    reason = mode_problem(mask, MASK_MODES)
    if reason:
        problems.append((name, reason))
    if image_wh and mask.size != image_wh:
        problems.append((name, f"mask size {mask.size} differs from image size {image_wh}"))
    return problems


def validate_folder(
    root: str | Path,
    image_size: Size | None,
    channels: int,
    mixed: str = "resize",
    bit_depth: int = 8,
    max_pixels: int = MAX_PIXELS,
) -> FolderLayout:
    """Check structure and every file; returns the layout that load_mvtec then reads, with
    the working resolution in layout.working_hw and the files' own sizes in
    layout.source_hw. Files are decoded one at a time; ``bit_depth`` > 8 declares a 16-bit
    mono camera whose window 0..2^bit_depth-1 maps to 0..255 (granvae.data.images)."""
    if bit_depth != 8 and channels != 1:
        raise ValueError(f"--bit-depth {bit_depth} needs channels 1 (16-bit mono cameras)")
    if not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be an int >= 1, got {max_pixels!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (L) or 3 (RGB), got {channels}")
    if mixed not in MIXED:
        raise ValueError(f"mixed must be one of {', '.join(MIXED)}, got {mixed!r}")
    if image_size is not None and min(as_hw(image_size)) < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DataValidationError(
            [("PIL.ImageFile.LOAD_TRUNCATED_IMAGES", "is True; truncated files would load")]
        )
    layout = scan_mvtec(root)
    problems = list(layout.problems)
    train_digests: dict[str, str] = {}
    sizes: dict[str, tuple[int, int]] = {}
    colour: list[str] = []
    for entry in layout.train:
        file_problems, digest, size = _check_image(entry, bit_depth, max_pixels, colour)
        problems += file_problems
        if digest is not None:
            train_digests.setdefault(digest, entry.name)
            sizes[entry.name] = size
    for entry in layout.test:
        file_problems, digest, size = _check_image(entry, bit_depth, max_pixels, colour)
        problems += file_problems + _check_mask(entry, layout.root, size)
        if digest is not None:
            sizes[entry.name] = size
        if digest in train_digests:
            twin = train_digests[digest]
            problems.append((entry.name, f"duplicate of {twin} (identical pixels in train)"))
    size_problems, working = _size_problems(sizes, image_size, mixed)
    problems += size_problems
    if problems:
        raise DataValidationError(problems)
    source = tuple(sorted({(h, w) for w, h in sizes.values()}))
    return dataclasses.replace(layout, working_hw=working, source_hw=source,
                               colour_files=tuple(colour))  # fmt: skip


def _bad_rows(flags: np.ndarray) -> np.ndarray:
    """Indices of rows with any flagged element; safe for empty arrays."""
    if flags.ndim > 1:
        flags = flags.any(axis=tuple(range(1, flags.ndim)))
    return np.flatnonzero(flags)


def _rows(split: Split, index: np.ndarray) -> str:
    """Name the first offending rows by position and source name."""
    shown = [f"{i} ({split.names[i]})" if i < len(split.names) else str(i) for i in index]
    more = f" and {len(index) - MAX_LISTED} more" if len(index) > MAX_LISTED else ""
    return "rows " + ", ".join(shown[:MAX_LISTED]) + more


def _structure_problems(name: str, split: Split, meta: DatasetMeta) -> list[Problem]:
    """dtype and shape of every field; values are only checked once these hold."""
    images = split.images
    n = images.shape[0] if isinstance(images, np.ndarray) and images.ndim > 0 else -1
    c, h, w = meta.observation_shape
    expected = {
        "images": ((n, c, h, w), np.uint8),
        "labels": ((n,), np.int64),
        "factors": ((n, len(meta.factor_names)), np.int64),
        "masks": ((n, h, w), np.uint8),
        "severity": ((n,), np.float32),
    }
    problems = []
    for field, (shape, dtype) in expected.items():
        array = getattr(split, field)
        where = f"{name}.{field}"
        if not isinstance(array, np.ndarray):
            problems.append((where, f"must be a numpy array, got {type(array).__name__}"))
            continue
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = _bad_rows(~np.isfinite(array))
            problems.append((where, f"NaN/inf values in {_rows(split, bad)}"))
        if array.dtype != dtype:
            problems.append((where, f"dtype {array.dtype}, expected {np.dtype(dtype)}"))
        if array.shape != shape:
            problems.append((where, f"shape {array.shape}, expected {shape}"))
    if len(split.names) != n or not all(isinstance(s, str) for s in split.names):
        problems.append((f"{name}.names", f"need {n} strings, got {len(split.names)} items"))
    return problems


def _value_problems(name: str, split: Split, meta: DatasetMeta) -> list[Problem]:
    """Value ranges and label/mask/severity consistency, one problem per violated rule."""
    labels, sev, masks = split.labels, split.severity, split.masks
    good = labels == 0
    n_classes = len(meta.class_names)
    sizes = np.asarray(meta.factor_sizes, np.int64)
    checks = [
        ("labels", (labels < 0) | (labels >= n_classes), f"outside 0..{n_classes - 1}"),
        (
            "factors",
            ((split.factors < -1) | (split.factors >= sizes)).any(axis=1),
            "index outside -1..size-1",
        ),
        ("masks", (masks > 1).any(axis=(1, 2)), "values other than 0/1"),
        ("masks", good & masks.any(axis=(1, 2)), "good images with defect pixels"),
        ("severity", good & (sev != 0.0), "good images need severity 0"),
        ("severity", ~good & ~((sev > 0.0) & (sev <= 1.0)), "defects need severity in (0, 1]"),
    ]
    if name in GOOD_ONLY_SPLITS:
        checks.append(("labels", ~good, f"{name} must hold good images only; defects"))
    return [
        (f"{name}.{field}", f"{message} in {_rows(split, np.flatnonzero(flags))}")
        for field, flags, message in checks
        if flags.any()
    ]


def split_problems(name: str, split: Split, meta: DatasetMeta) -> list[Problem]:
    """Every contract violation of one split (empty list when it is valid)."""
    problems = _structure_problems(name, split, meta)
    if problems:
        return problems
    if name == "train" and len(split) == 0:
        return [("train", "empty: training needs at least one good image")]
    return _value_problems(name, split, meta)


def meta_problems(meta: DatasetMeta) -> list[Problem]:
    problems = []
    if not meta.class_names or meta.class_names[0] != GOOD:
        problems.append(("meta.class_names", f"must start with {GOOD!r}, got {meta.class_names}"))
    if len(set(meta.class_names)) != len(meta.class_names):
        problems.append(("meta.class_names", f"duplicate names in {meta.class_names}"))
    if len(meta.factor_names) != len(meta.factor_sizes):
        problems.append(("meta.factor_sizes", "needs one size per factor name"))
    if any(int(s) < 1 for s in meta.factor_sizes):
        problems.append(("meta.factor_sizes", f"sizes must be >= 1, got {meta.factor_sizes}"))
    shape = tuple(meta.observation_shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        problems.append(("meta.observation_shape", f"need (1 or 3, H, W), got {shape}"))
    return problems


def validate_split(name: str, split: Split, meta: DatasetMeta) -> None:
    problems = meta_problems(meta) or split_problems(name, split, meta)
    if problems:
        raise DataValidationError(problems)


def validate_dataset(splits: dict[str, Split], meta: DatasetMeta) -> None:
    """All splits and the meta at once, so one error lists everything wrong."""
    problems = meta_problems(meta)
    if sorted(splits) != sorted(SPLITS):
        problems.append(("splits", f"need exactly {list(SPLITS)}, got {sorted(splits)}"))
    if not problems:
        for name in SPLITS:
            problems += split_problems(name, splits[name], meta)
    if problems:
        raise DataValidationError(problems)
