"""The data contract every other granvae module meets (docs/contracts.md, "Data").

Everything here is plain containers and one error type, so that generators, the folder
loader, the store and the trainer agree on arrays without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

GOOD = "good"


@dataclass(frozen=True)
class Split:
    """One split of a data set; all arrays share the first axis N.

    images:   uint8 (N, C, H, W), 0..255
    labels:   int64 (N,), 0 = good, k = meta.class_names[k]
    factors:  int64 (N, F) factor indices, -1 where unknown
    masks:    uint8 (N, H, W), 1 where defective
    severity: float32 (N,), 0.0 for good images, in (0, 1] for defects
    names:    a source name per image (file path relative to the root, or "gen:<seed>:<i>")
    """

    images: np.ndarray
    labels: np.ndarray
    factors: np.ndarray
    masks: np.ndarray
    severity: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class DatasetMeta:
    """What a data set is, independent of its splits; stored verbatim in the manifest."""

    name: str
    kind: str
    observation_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    seed: int | None


@runtime_checkable
class FactorDataset(Protocol):
    """Ground-truth data with known generative factors (disentanglement_lib's GroundTruthData).

    Randomness is always passed in, so two callers never share hidden state and every
    sample is reproducible from the generator they hand over.
    """

    @property
    def factor_names(self) -> tuple[str, ...]: ...

    @property
    def factor_sizes(self) -> tuple[int, ...]: ...

    @property
    def observation_shape(self) -> tuple[int, int, int]: ...

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, F) int64 factor indices, each column uniform over its size."""
        ...

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """uint8 (n, C, H, W) observations for the given factor indices."""
        ...


class DataValidationError(ValueError):
    """Bad data, with every problem found rather than only the first.

    Operators fix a landing folder in one pass only if they see all offending files at once;
    `problems` keeps them machine-readable as (file_or_field, problem) pairs.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        lines = [f"  - {where}: {what}" for where, what in self.problems]
        super().__init__(f"{len(self.problems)} data problem(s):\n" + "\n".join(lines))

    def __reduce__(self):
        # Flows and Dask workers pickle exceptions; keep the structured problems intact.
        return (type(self), (self.problems,))


def sample_uniform_factors(sizes: tuple[int, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """Independent uniform factor indices; shared by every generator so they sample alike."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    columns = [rng.integers(0, size, size=n) for size in sizes]
    return np.stack(columns, axis=1).astype(np.int64) if columns else np.zeros((n, 0), np.int64)


def check_factors(factors: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """Reject out-of-range factor indices early; a silent wrap-around would mislabel images."""
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != len(sizes):
        raise ValueError(f"factors must have shape (n, {len(sizes)}), got {factors.shape}")
    bad = (factors < 0) | (factors >= np.asarray(sizes, dtype=np.int64))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"factor {col} of row {row} is {factors[row, col]}, size {sizes[col]}")
    return factors.astype(np.int64)


def make_split(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    factors: np.ndarray | None = None,
    masks: np.ndarray | None = None,
    severity: np.ndarray | None = None,
    names: tuple[str, ...] | list[str] = (),
    n_factors: int = 0,
) -> Split:
    """Build a Split with contract dtypes, filling the fields a source does not know."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    n, _, h, w = images.shape
    return Split(
        images=images,
        labels=np.zeros(n, np.int64) if labels is None else np.asarray(labels, np.int64),
        factors=(
            np.full((n, n_factors), -1, np.int64)
            if factors is None
            else np.asarray(factors, np.int64)
        ),
        masks=np.zeros((n, h, w), np.uint8) if masks is None else np.asarray(masks, np.uint8),
        severity=(
            np.zeros(n, np.float32) if severity is None else np.asarray(severity, np.float32)
        ),
        names=tuple(str(s) for s in names),
    )


def concat_splits(parts: list[Split]) -> Split:
    """Stack splits in order; used by shard loading and by generators built piecewise."""
    if not parts:
        raise ValueError("nothing to concatenate")
    return Split(
        images=np.concatenate([p.images for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        factors=np.concatenate([p.factors for p in parts]),
        masks=np.concatenate([p.masks for p in parts]),
        severity=np.concatenate([p.severity for p in parts]),
        names=tuple(name for p in parts for name in p.names),
    )


def take(split: Split, index: np.ndarray) -> Split:
    """Select rows of every field at once, so fields can never drift out of alignment."""
    index = np.asarray(index, dtype=np.int64)
    return Split(
        images=split.images[index],
        labels=split.labels[index],
        factors=split.factors[index],
        masks=split.masks[index],
        severity=split.severity[index],
        names=tuple(split.names[i] for i in index),
    )


def class_counts(split: Split, class_names: tuple[str, ...]) -> dict[str, int]:
    """Images per class name, every class listed (zeros included) for stable manifests."""
    counts = np.bincount(split.labels, minlength=len(class_names))
    return {name: int(counts[k]) for k, name in enumerate(class_names)}
