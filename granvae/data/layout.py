"""Discover the files of an MVTec-AD style folder, without decoding any of them.

    root/train/good/*.png|jpg           good images (train, val is carved from these)
    root/test/good/*                    good test images
    root/test/<defect_type>/*           defect images, one class per folder
    root/ground_truth/<defect_type>/<stem>_mask.png

Scanning is separate from decoding so that validation can report structural problems
(missing folders, empty classes, missing masks) together with file problems, and so that
the loader reads exactly the files validation checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from granvae.data.base import GOOD
from granvae.data.images import IMAGE_SUFFIXES, is_image_file, regular_file_problem

Problem = tuple[str, str]


@dataclass(frozen=True)
class FolderEntry:
    """One image file; `name` (relative posix path) is what Split.names records."""

    path: Path
    name: str
    label: int
    mask_path: Path | None


@dataclass(frozen=True)
class FolderLayout:
    root: Path
    class_names: tuple[str, ...]
    train: tuple[FolderEntry, ...]
    test: tuple[FolderEntry, ...]
    problems: tuple[Problem, ...]
    working_hw: tuple[int, int] | None = None  # (H, W) every image is brought to; set by
    # validate_folder once it has seen every file's size
    source_hw: tuple[tuple[int, int], ...] = ()  # distinct (H, W) of the files, before resize
    colour_files: tuple[str, ...] = ()  # files in colour (RGB, P...): set by validate_folder


def _images_in(folder: Path, root: Path, problems: list[Problem]) -> list[Path]:
    """Image files of a class folder; an unreadable folder or a non-regular file with an
    image suffix (FIFO, dangling link, loop) is a problem line, never opened, never silent."""
    try:
        candidates = sorted(p for p in folder.iterdir() if is_image_file(p))
    except OSError as exc:
        problems.append((folder.relative_to(root).as_posix(),
                         f"cannot list folder: {exc.strerror or exc}"))  # fmt: skip
        return []
    images = []
    for path in candidates:
        problem = regular_file_problem(path)
        if problem:
            problems.append((path.relative_to(root).as_posix(), problem))
        else:
            images.append(path)
    return images


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []  # the caller's listing of the same folder names the problem


def _find_mask(gt_dir: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = gt_dir / f"{stem}_mask{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _class_entries(
    root: Path, folder: Path, label: int, problems: list[Problem]
) -> list[FolderEntry]:
    """Entries of one class folder; masks are looked up for defect classes only."""
    rel = folder.relative_to(root).as_posix()
    before = len(problems)
    images = _images_in(folder, root, problems)
    if not images and len(problems) == before:
        problems.append((rel, f"empty class folder: no {'/'.join(IMAGE_SUFFIXES)} images"))
    gt_dir = root / "ground_truth" / folder.name
    entries = []
    for path in images:
        mask_path = None
        if label > 0 and gt_dir.is_dir():
            mask_path = _find_mask(gt_dir, path.stem)
            if mask_path is None:
                expected = (gt_dir / f"{path.stem}_mask.png").relative_to(root).as_posix()
                problems.append((path.relative_to(root).as_posix(), f"mask missing: {expected}"))
        entries.append(FolderEntry(path, path.relative_to(root).as_posix(), label, mask_path))
    return entries


def _scan_train(root: Path, problems: list[Problem]) -> list[FolderEntry]:
    train = root / "train"
    good = train / GOOD
    if not good.is_dir():
        problems.append(("train/good", "missing folder: training needs good images"))
        return []
    for extra in _subdirs(train):
        if extra.name != GOOD:
            problems.append((f"train/{extra.name}", "train must hold only train/good"))
    return _class_entries(root, good, 0, problems)


def scan_mvtec(root: str | Path) -> FolderLayout:
    """Inventory of the folder plus every structural problem found on the way."""
    root = Path(root)
    problems: list[Problem] = []
    if not root.is_dir():
        problems.append((str(root), "not a folder"))
        return FolderLayout(root, (GOOD,), (), (), tuple(problems))
    train = _scan_train(root, problems)
    test_dir = root / "test"
    folders = _subdirs(test_dir) if test_dir.is_dir() else []
    if not test_dir.is_dir():
        problems.append(("test", "missing folder"))
    defect_types = tuple(p.name for p in folders if p.name != GOOD)
    class_names = (GOOD, *defect_types)
    test: list[FolderEntry] = []
    for folder in folders:
        test += _class_entries(root, folder, class_names.index(folder.name), problems)
    return FolderLayout(root, class_names, tuple(train), tuple(test), tuple(problems))
