"""Statistics of good images that some score rules need, fitted once and shipped with them.

A normalized residual asks "is this pixel's error unusual *for this pixel*?", which needs
the mean and spread of each pixel's residual over good images; the latent-density term
needs the mean and precision of the posterior means of good images; the fusion needs each
component's spread so that no component outvotes the others by its units alone. These
numbers become constants of the exported graph (the edge cannot compute them differently)
and a file of the bundle (``score_stats.npz``), so an auditor can read what was used.

They are fitted on *training* images (good by construction), never on the validation
images that calibrate the threshold: fitting and calibrating on one set would make the
calibrated false-alarm rate optimistic.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from granvae.scoring.tiling import Tiling

STATS_FILE = "score_stats.npz"
SCORING_FILE = "scoring.json"
MAX_FIT_IMAGES = 1024
STD_FLOOR_SHARE = 0.1  # std floor = this share of the median pixel std (flat backgrounds)
RIDGE_SHARE = 1e-2  # latent covariance ridge = this share of its mean variance


@dataclass(frozen=True)
class ScoreStats:
    """Arrays in float32; shapes (C, H, W), (C, H, W), (D,), (D, D), (P,), (P,)."""

    pixel_mean: np.ndarray
    pixel_std: np.ndarray
    latent_mean: np.ndarray
    latent_precision: np.ndarray
    fusion_mean: np.ndarray
    fusion_std: np.ndarray

    def save(self, directory: Path | str) -> Path:
        path = Path(directory) / STATS_FILE
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **asdict(self))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: Path | str) -> ScoreStats:
        with np.load(Path(directory) / STATS_FILE) as data:
            return cls(**{f.name: np.asarray(data[f.name], np.float32) for f in fields(cls)})

    def is_finite(self) -> bool:
        return all(np.all(np.isfinite(getattr(self, f.name))) for f in fields(self))


def residual_moments(residuals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and floored std of signed residuals (N, C, H, W)."""
    mean = residuals.mean(0)
    std = residuals.std(0)
    floor = STD_FLOOR_SHARE * float(np.median(std)) + 1e-6
    return mean.astype(np.float32), np.maximum(std, floor).astype(np.float32)


def latent_moments(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and ridge-regularised precision of posterior means (N, D)."""
    mean = codes.mean(0)
    cov = np.atleast_2d(np.cov(codes, rowvar=False))
    ridge = RIDGE_SHARE * float(np.mean(np.diag(cov))) + 1e-6
    precision = np.linalg.inv(cov + ridge * np.eye(cov.shape[0]))
    return mean.astype(np.float32), precision.astype(np.float32)


def component_moments(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each fusion component over good images (N, P)."""
    std = scores.std(0)
    return scores.mean(0).astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


@dataclass(frozen=True)
class ScoringConfig:
    """Which rule a head scores with, its shape parameters and its tiles (scoring.json)."""

    rule: str = "zres_topk"
    smooth_sigma: float = 2.0
    topk_frac: float = 0.01
    tile: int | None = None  # set: the model scores tiles of this side (granvae.scoring.tiling)
    stride: int | None = None

    def geometry(self) -> Tiling | None:
        return None if self.tile is None else Tiling(self.tile, self.stride or self.tile)

    def save(self, directory: Path | str) -> Path:
        path = Path(directory) / SCORING_FILE
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, directory: Path | str) -> ScoringConfig | None:
        path = Path(directory) / SCORING_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None
