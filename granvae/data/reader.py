"""A lazy view of one split of the dataset store, for data sets too large to hold.

load_split reads a whole split; training on tiles of large parts, or scoring them, wants
one shard at a time or only the images of a batch. SplitReader gives both, reading no
shard until asked and verifying each one (sha256, row count, the Data contract) every
time it is read, exactly as load_split does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from granvae.data.base import DataValidationError, Split, concat_splits, take
from granvae.data.store import _read_shard, _split_shards, meta_from_manifest, read_manifest
from granvae.data.validate import meta_problems, split_problems


class SplitReader:
    """One split of a store, read lazily: shard by shard, or only the shards holding the
    rows asked for. Nothing is read until asked; every shard is verified (sha256, count,
    the Data contract) each time it is read, so a reader never trusts a cached byte."""

    def __init__(self, directory: str | Path, split: str) -> None:
        self.directory = Path(directory)
        manifest = read_manifest(self.directory)
        self.name = split
        self.meta = meta_from_manifest(manifest)
        self._shards = _split_shards(self.directory, manifest, split)
        counts = [int(shard["count"]) for shard in self._shards]
        self._ends = np.cumsum(counts, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    def shard(self, k: int) -> Split:
        """Shard k, verified; raises DataValidationError naming the shard."""
        part, problems = _read_shard(self.directory, self._shards[k])
        if part is not None:
            problems = meta_problems(self.meta) or split_problems(self.name, part, self.meta)
        if problems:
            raise DataValidationError(problems)
        return part

    def __iter__(self) -> Iterator[Split]:
        return (self.shard(k) for k in range(self.n_shards))

    def read(self, index: np.ndarray | list[int]) -> Split:
        """Rows by position in the split, in the order given; reads only their shards."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"rows outside 0..{len(self) - 1} of split {self.name!r}")
        owner = np.searchsorted(self._ends, index, side="right")
        starts = np.concatenate([[0], self._ends[:-1]])
        parts, positions = [], []
        for k in np.unique(owner):
            rows = np.flatnonzero(owner == k)
            parts.append(take(self.shard(int(k)), index[rows] - starts[k]))
            positions.append(rows)
        if not parts:
            return take(self.shard(0), np.zeros(0, np.int64))
        order = np.argsort(np.concatenate(positions), kind="stable")
        return take(concat_splits(parts), order)


def open_split(directory: str | Path, split: str) -> SplitReader:
    """A lazy view of one split (see SplitReader): the way to walk a large data set."""
    return SplitReader(directory, split)
