"""Position-aware scoring on the edge: the numpy twin of granvae/scoring/position.py.

The bundle may ship ``position_stats.npz`` (reference good frame, per-pixel mean and spread
of good parts' full-size anomaly maps on that frame, the reduction). A part's stitched map
is standardised by those statistics brought onto the part's own frame (registration.py),
and its score is the maximum (or top-k mean) of the standardised map.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import registration
from .bundle import BundleError

STATS_FILE = "position_stats.npz"
REDUCES = ("max", "topk")


class PositionStatsError(BundleError):
    """The shipped statistics file is missing a field or does not fit the bundle."""


@dataclass(frozen=True)
class PositionStats:
    reference: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    register: bool
    reduce: str
    topk: int

    @classmethod
    def load(cls, path: Path | str | io.BytesIO) -> PositionStats:
        """Read and check the .npz (no pickle): three (H, W) arrays of one shape, spread > 0."""
        try:
            with np.load(path, allow_pickle=False) as f:
                stats = cls(
                    reference=np.asarray(f["reference"], np.float32),
                    mean=np.asarray(f["mean"], np.float32),
                    spread=np.asarray(f["spread"], np.float32),
                    register=bool(f["register"]), reduce=str(f["reduce"]), topk=int(f["topk"]),
                )  # fmt: skip
        except (OSError, KeyError, ValueError) as exc:
            raise PositionStatsError(f"{path}: not a position statistics file ({exc})") from exc
        shapes = {stats.reference.shape, stats.mean.shape, stats.spread.shape}
        if len(shapes) != 1 or stats.mean.ndim != 2:
            raise PositionStatsError(f"{path}: reference, mean and spread must be (H, W) "
                                     f"arrays of one shape, got {sorted(shapes)}")  # fmt: skip
        if not np.all(np.isfinite(stats.mean)) or not np.all(stats.spread > 0):
            raise PositionStatsError(f"{path}: mean must be finite and spread > 0")
        if stats.reduce not in REDUCES or stats.topk < 1:
            raise PositionStatsError(f"{path}: reduce must be one of {REDUCES} with topk >= 1")
        return stats

    def standardised(self, image: np.ndarray, amap: np.ndarray) -> np.ndarray:
        """(H, W) z-map of one (H, W[, C]) part on its own frame."""
        if self.register:
            rigid = registration.estimate(self.reference, registration.gray(image))
            mean = registration.to_frame(self.mean, rigid)
            spread = registration.to_frame(self.spread, rigid)
        else:
            mean, spread = self.mean, self.spread
        return ((np.asarray(amap, np.float32) - mean) / spread).astype(np.float32)

    def score(self, z: np.ndarray) -> float:
        flat = np.asarray(z, np.float32).ravel()
        if self.reduce == "max":
            return float(flat.max())
        k = min(self.topk, flat.size)
        top = np.partition(flat, flat.size - k)[flat.size - k :]
        return float(top.astype(np.float64).mean())


def load_for_bundle(directory: Path, manifest: dict[str, Any]) -> PositionStats | None:
    """The bundle's statistics if its manifest has a ``position`` block ({"file", "sha256"}),
    verified against the hash before use (the bytes hashed are the bytes read); else None."""
    block = manifest.get("position")
    if block is None:
        return None
    tiling = manifest.get("tiling")
    if tiling is None:
        raise PositionStatsError("manifest field 'position' needs a 'tiling' block: position "
                                 "statistics are full-size maps of a tiled bundle")  # fmt: skip
    if not isinstance(block, dict) or not isinstance(block.get("file"), str):
        raise PositionStatsError("manifest field 'position.file' must be a file name")
    name, sha = block["file"], str(block.get("sha256", ""))
    if not name or Path(name).name != name:
        raise PositionStatsError("manifest field 'position.file' must be a plain file name")
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
        raise PositionStatsError("manifest field 'position.sha256' must be 64 hex characters")
    path = directory / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PositionStatsError(f"cannot read {path}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha.lower():
        raise PositionStatsError(f"sha256 mismatch for {path}: file has {digest}, manifest "
                                 f"says {sha}")  # fmt: skip
    stats = PositionStats.load(io.BytesIO(data))
    expected = (int(tiling["image_height"]), int(tiling["image_width"]))
    if stats.mean.shape != expected:
        raise PositionStatsError(f"{path}: statistics are {stats.mean.shape} but the tiling "
                                 f"block's image is {expected}")  # fmt: skip
    return stats
