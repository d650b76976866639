"""Position-aware statistics of the full-size anomaly map: what good parts look like *here*.

On a part held in a fixture the stitched anomaly map of a good part peaks on the part's
outline (a tile model reconstructs a high-contrast edge less well than a faint scratch
departs from the texture), so the map's maximum is decided by the outline and every part
looks alike. Standardising the map per pixel by its mean and spread over good parts turns
"large here" into "larger than good parts are here": the outline's pixels get a large
spread and stop deciding the score, while a defect on flat surface stands out.

Because the part moves, the statistics live on a reference good frame: each good part's map
is brought onto it with the rigid motion that registers its image to the reference image
(granvae.scoring.registration); a new part's motion is estimated the same way and the
statistics are brought onto *its* frame, so the standardised map stays aligned with the
image it explains. Optionally the mean and spread are dilated (a max filter of ``dilate``
px radius) so what registration leaves over does not read as a defect.

The score is a localized statistic of the standardised map z = (map - mean) / spread: its
maximum, or the mean of its ``topk`` largest pixels. The edge runtime repeats ``apply`` in
numpy on the same shipped arrays (deploy/granvae_edge/position.py); the parity test holds the
two together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from granvae.scoring import registration
from granvae.scoring.registration import Rigid

REDUCES = ("max", "topk")
STATS_FILE = "position_stats.npz"


@dataclass(frozen=True)
class PositionStats:
    """Per-pixel good-part statistics on the reference frame, and how to use them."""

    reference: np.ndarray  # (H, W) float32: the reference good frame (gray)
    mean: np.ndarray  # (H, W) float32: mean of good parts' maps on the reference grid
    spread: np.ndarray  # (H, W) float32: their spread, floored (> 0 everywhere)
    register: bool = True  # estimate each frame's motion (False: the frame is the grid)
    reduce: str = "max"
    topk: int = 1

    def save(self, path: Path | str) -> None:
        """The arrays and settings in one .npz (the bundle ships it; no pickle)."""
        np.savez(
            path, reference=self.reference, mean=self.mean, spread=self.spread,
            register=np.asarray(self.register), reduce=np.asarray(self.reduce),
            topk=np.asarray(self.topk),
        )  # fmt: skip

    @classmethod
    def load(cls, path: Path | str) -> PositionStats:
        with np.load(path, allow_pickle=False) as f:
            return cls(
                reference=f["reference"], mean=f["mean"], spread=f["spread"],
                register=bool(f["register"]), reduce=str(f["reduce"]), topk=int(f["topk"]),
            )  # fmt: skip


def fit(
    images: np.ndarray,
    maps: np.ndarray,
    register: bool = True,
    dilate: int = 0,
    floor: float = 0.25,
    reduce: str = "max",
    topk: int = 1,
    reference_index: int = 0,
    rigids: list[Rigid] | None = None,
) -> PositionStats:
    """Statistics from good parts: ``images`` (N, C, H, W) or (N, H, W), ``maps`` (N, H, W)
    their full-size anomaly maps (the ones the score is read from).

    ``spread`` is the per-pixel standard deviation floored at ``floor`` x its median, so a
    pixel where every good part happened to agree (flat background) cannot turn noise into
    an alarm. ``dilate`` > 0 max-filters mean and spread over a (2 dilate + 1)^2 window.
    ``rigids``: each part's motion onto ``images[reference_index]`` if already estimated.
    """
    if reduce not in REDUCES:
        raise ValueError(f"position reduce must be one of {REDUCES}, got {reduce!r}")
    if len(images) != len(maps) or len(maps) < 2:
        raise ValueError(f"position statistics need >= 2 good parts with one map each, got "
                         f"{len(images)} images and {len(maps)} maps")  # fmt: skip
    reference = registration.gray(images[reference_index])
    if reference.shape != maps.shape[1:]:
        raise ValueError(f"maps are {maps.shape[1:]} but images are {reference.shape}: "
                         "position statistics need full-size maps")  # fmt: skip
    aligned = np.empty(maps.shape, np.float32)
    for i, (image, amap) in enumerate(zip(images, maps, strict=True)):
        if register:
            gray = registration.gray(image)
            rigid = rigids[i] if rigids else registration.estimate(reference, gray)
            aligned[i] = registration.to_reference(amap, rigid)
        else:
            aligned[i] = amap
    mean = aligned.mean(axis=0, dtype=np.float64)
    std = aligned.std(axis=0, dtype=np.float64)
    if dilate > 0:
        size = 2 * dilate + 1
        mean = ndimage.maximum_filter(mean, size=size, mode="nearest")
        std = ndimage.maximum_filter(std, size=size, mode="nearest")
    spread = np.maximum(std, floor * float(np.median(std)) + 1e-12)
    return PositionStats(
        reference=reference.astype(np.float32), mean=mean.astype(np.float32),
        spread=spread.astype(np.float32), register=register, reduce=reduce, topk=topk,
    )  # fmt: skip


def standardised(
    stats: PositionStats, image: np.ndarray, amap: np.ndarray, rigid: Rigid | None = None
) -> np.ndarray:
    """(H, W) z-map of one part, on the part's own frame (aligned with its image);
    ``rigid``: its motion onto the reference if already estimated."""
    if stats.register:
        rigid = rigid or registration.estimate(stats.reference, registration.gray(image))
        mean = registration.to_frame(stats.mean, rigid)
        spread = registration.to_frame(stats.spread, rigid)
    else:
        mean, spread = stats.mean, stats.spread
    return ((np.asarray(amap, np.float32) - mean) / spread).astype(np.float32)


def reduce_map(z: np.ndarray, reduce: str, topk: int) -> float:
    """The part's score from its z-map: the max, or the mean of the ``topk`` largest."""
    flat = np.asarray(z, np.float32).ravel()
    if reduce == "max":
        return float(flat.max())
    top = np.partition(flat, flat.size - topk)[flat.size - topk :]
    return float(top.astype(np.float64).mean())


def motions(reference: np.ndarray, images: np.ndarray) -> list[Rigid]:
    """Each (C, H, W) part's motion onto the (H, W) reference (estimate once, use often)."""
    return [registration.estimate(reference, registration.gray(im)) for im in images]


def apply(
    stats: PositionStats,
    images: np.ndarray,
    maps: np.ndarray,
    rigids: list[Rigid] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores (N,) and z-maps (N, H, W) of parts given their images and anomaly maps."""
    per = rigids or [None] * len(images)
    zs = np.stack([standardised(stats, im, m, r)
                   for im, m, r in zip(images, maps, per, strict=True)])  # fmt: skip
    scores = np.asarray([reduce_map(z, stats.reduce, stats.topk) for z in zs], np.float32)
    return scores, zs
