"""Synthetic data sets in the contract's shape, reproducible from a seed alone.

Each split draws from its own child of SeedSequence(seed), so changing n_train never changes
the val or test images (a test set stays comparable while training data grows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from granvae.data.base import GOOD, DatasetMeta, FactorDataset, Split, make_split
from granvae.data.defects import render_defect
from granvae.data.shapes import Shapes
from granvae.data.surfaces import CLASS_NAMES as SURFACE_CLASSES
from granvae.data.surfaces import Surfaces

SEVERITY_RANGE = (0.2, 1.0)


@dataclass(frozen=True)
class GeneratorKind:
    """How to build one kind: its clean-image source and the classes its test split holds."""

    make: Callable[[int], FactorDataset]
    class_names: tuple[str, ...]


KINDS: dict[str, GeneratorKind] = {
    "shapes": GeneratorKind(make=Shapes, class_names=(GOOD,)),
    "surfaces": GeneratorKind(make=Surfaces, class_names=SURFACE_CLASSES),
}


def generate(
    kind: str,
    n_train: int,
    n_val: int,
    n_test: int,
    seed: int,
    image_size: int = 64,
    defect_fraction: float = 0.5,
    defect_px: float | None = None,
) -> tuple[dict[str, Split], DatasetMeta]:
    """Train and val hold good images only; test holds defect_fraction defects if the kind
    has defect classes, split evenly across them, severities uniform in SEVERITY_RANGE.

    defect_px: the defects' size in pixels at severity 1 (granvae.data.defects), e.g. 6 on
    a 512-px part; None keeps them a fixed share of the image side (the same bytes as
    before the option existed)."""
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r}; valid kinds: {sorted(KINDS)}")
    if n_train < 1 or n_val < 0 or n_test < 0:
        raise ValueError(
            f"need n_train >= 1, n_val >= 0, n_test >= 0; got {n_train, n_val, n_test}"
        )
    if not 0.0 <= defect_fraction <= 1.0:
        raise ValueError(f"defect_fraction must be in [0, 1], got {defect_fraction}")
    if not isinstance(image_size, (int, np.integer)):
        raise ValueError(
            f"image_size must be a side in px for generated data, got {image_size!r} "
            "(the native size, null, applies to imported folders only)"
        )
    spec = KINDS[kind]
    if defect_px is not None and (len(spec.class_names) < 2 or not defect_px > 0):
        raise ValueError(f"defect_px must be > 0 and needs a kind with defects, got {defect_px}")
    source = spec.make(image_size)
    train_rng, val_rng, test_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    names = [f"gen:{seed}:{i}" for i in range(n_train + n_val + n_test)]
    splits = {
        "train": _good_split(source, n_train, train_rng, names[:n_train]),
        "val": _good_split(source, n_val, val_rng, names[n_train : n_train + n_val]),
        "test": _test_split(
            source,
            spec.class_names,
            n_test,
            defect_fraction,
            test_rng,
            names[n_train + n_val :],
            defect_px,
        ),
    }
    meta = DatasetMeta(
        name=kind,
        kind=kind,
        observation_shape=source.observation_shape,
        class_names=spec.class_names,
        factor_names=tuple(source.factor_names),
        factor_sizes=tuple(source.factor_sizes),
        seed=int(seed),
    )
    return splits, meta


def _good_split(source: FactorDataset, n: int, rng: np.random.Generator, names: list[str]) -> Split:
    factors = source.sample_factors(n, rng)
    images = source.sample_observations_from_factors(factors, rng)
    return make_split(images, factors=factors, names=names, n_factors=len(source.factor_sizes))


def _region(source: FactorDataset, factors: np.ndarray) -> np.ndarray | None:
    """Where defects may appear, if the source knows (Surfaces: on the part only)."""
    part_region = getattr(source, "part_region", None)
    return None if part_region is None else part_region(factors[None])[0]


def defect_counts(n_defects: int, n_classes: int) -> list[int]:
    """Split n_defects as evenly as possible; earlier classes take the remainder."""
    return [n_defects // n_classes + (k < n_defects % n_classes) for k in range(n_classes)]


def _test_split(
    source: FactorDataset,
    class_names: tuple[str, ...],
    n: int,
    defect_fraction: float,
    rng: np.random.Generator,
    names: list[str],
    defect_px: float | None = None,
) -> Split:
    """Good and defect images, shuffled so that any prefix holds a mix of classes."""
    defect_classes = class_names[1:]
    n_defects = int(round(n * defect_fraction)) if defect_classes else 0
    per_class = defect_counts(n_defects, len(defect_classes)) if defect_classes else []
    labels = np.concatenate(
        [np.zeros(n - n_defects, np.int64)]
        + [np.full(c, k + 1, np.int64) for k, c in enumerate(per_class)]
    )
    rng.shuffle(labels)
    clean = _good_split(source, n, rng, names)
    images = clean.images.copy()
    masks = clean.masks.copy()
    severity = np.zeros(n, np.float32)
    for i in np.flatnonzero(labels):
        severity[i] = rng.uniform(*SEVERITY_RANGE)
        region = _region(source, clean.factors[i])
        images[i], masks[i] = render_defect(
            images[i], class_names[labels[i]], float(severity[i]), rng, region, defect_px
        )
    return make_split(images, labels, clean.factors, masks, severity, names)
