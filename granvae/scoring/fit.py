"""Fit a head's good-image statistics, and rebuild a candidate's head from its folder.

Order matters: the residual and latent moments come first, because the fusion
standardises components that are themselves computed with those moments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from granvae.models import FactorizedVAE
from granvae.objectives import make_groups
from granvae.scoring import density, features
from granvae.scoring.density_fit import fit_density
from granvae.scoring.head import (
    FUSION_PARTS,
    RULES,
    InspectionHead,
    _Pass,
    batches_nhwc,
    check_tile_rule,
)
from granvae.scoring.stats import (
    MAX_FIT_IMAGES,
    STATS_FILE,
    ScoreStats,
    ScoringConfig,
    component_moments,
    latent_moments,
    residual_moments,
)
from granvae.scoring.tiling import Tiling, grid_tiles

__all__ = ["build_head", "fit_head", "load_head", "save_head_scoring"]


@torch.no_grad()
def _passes(head: InspectionHead, images: np.ndarray, batch_size: int = 256):
    for batch in batches_nhwc(images, batch_size, "cpu"):
        yield _Pass(head, batch)


@torch.no_grad()
def fit_head(
    head: InspectionHead, good_images: np.ndarray, rng: np.random.Generator | None = None
) -> ScoreStats:
    """Fill ``head``'s statistics from uint8 NCHW good images (at most MAX_FIT_IMAGES)."""
    if len(good_images) < 2:
        raise ValueError(f"need >= 2 good images to fit score statistics, got {len(good_images)}")
    if len(good_images) > MAX_FIT_IMAGES:
        rng = rng or np.random.default_rng(0)
        keep = np.sort(rng.choice(len(good_images), MAX_FIT_IMAGES, replace=False))
        good_images = good_images[keep]
    head = head.cpu().eval()
    residuals, codes = [], []
    for p in _passes(head, good_images):
        residuals.append(p.residual().numpy())
        codes.append(p.mu.numpy())
    pixel_mean, pixel_std = residual_moments(np.concatenate(residuals))
    latent_mean, latent_precision = latent_moments(np.concatenate(codes))
    n_parts = len(FUSION_PARTS)
    partial = ScoreStats(
        pixel_mean, pixel_std, latent_mean, latent_precision,
        np.zeros(n_parts, np.float32), np.ones(n_parts, np.float32),
    )  # fmt: skip
    head.set_stats(partial)
    parts = [
        torch.stack([RULES[name][0](p) for name in FUSION_PARTS], dim=1).numpy()
        for p in _passes(head, good_images)
    ]
    fusion_mean, fusion_std = component_moments(np.concatenate(parts))
    stats = ScoreStats(
        pixel_mean, pixel_std, latent_mean, latent_precision, fusion_mean, fusion_std
    )
    head.set_stats(stats)
    return stats


def build_head(
    model: FactorizedVAE,
    groups: list[list[int]],
    rule: str,
    train_images: np.ndarray,
    smooth_sigma: float = 2.0,
    topk_frac: float = 0.01,
    tiling: Tiling | None = None,
    also: tuple[str, ...] = (),
) -> InspectionHead:
    """The head a candidate is evaluated and shipped with: statistics fitted on its own
    training images whatever the rule, so any rule can be looked at later from the folder.
    A tiled head fits them on the scoring grid's tiles of (a sample of) those images, and a
    tile-density rule also its coreset and moments (any density rule can then be looked at).
    ``also``: further rules to fit for (the per-line choice scores several on one head);
    the feature bank of ``feat_knn`` is fitted only when asked for, as it costs a pass over
    the training images and a coreset."""
    head = InspectionHead(model, groups, "neg_elbo", smooth_sigma=smooth_sigma, topk_frac=topk_frac)
    if tiling is not None:
        check_tile_rule(rule)
        if rule in density.DENSITY_RULES:  # only then: it costs ~8k tile passes
            # random grid tiles of many training images (granvae.scoring.density)
            fit_density(head, train_images, tiling, np.random.default_rng(0))
        # a seeded sample of images, all grid tiles of each, about MAX_FIT_IMAGES in all
        train_images = grid_tiles(train_images, tiling, MAX_FIT_IMAGES, np.random.default_rng(0))
    elif features.FEATURE_RULES & {rule, *also}:
        features.first_conv(model)
        features.fit_feature_bank(head, train_images, np.random.default_rng(0))
    fit_head(head, train_images)
    head.score_kind, head.tiling = rule, tiling
    return head


def save_head_scoring(head: InspectionHead, directory: Path | str) -> None:
    """scoring.json (+ score_stats.npz when fitted) beside the candidate's model."""
    head.config.save(directory)
    if head.stats_fitted:
        head.stats().save(directory)
    if head.density_fitted:
        density.get_stats(head).save(directory)
    if head.feature_fitted:
        features.save_bank(head, directory)


def load_head(candidate_dir: Path | str, granularity: int, rule: str | None = None):
    """The head a candidate was evaluated with: model, groups, rule and statistics.

    ``rule`` overrides the saved rule (any rule whose statistics are saved works), so a
    report or a benchmark can look at one model through several rules.
    """
    candidate_dir = Path(candidate_dir)
    model = FactorizedVAE.load(candidate_dir / "model").eval()
    return head_from_folder(model, make_groups(model.config.latent_dim, granularity),
                            candidate_dir, rule)  # fmt: skip


def head_from_folder(
    model: FactorizedVAE,
    groups: list[list[int]],
    folder: Path | str,
    rule: str | None = None,
    default_rule: str = "neg_elbo",
) -> InspectionHead:
    """``model`` under the head saved beside it: scoring.json's rule and shape, and every
    constant fitted for it (good-image statistics, tile densities, feat_knn's bank). One
    reader for evaluation, export and the champion comparison, so a new constant cannot
    reach one of them and not the others. ``default_rule`` when there is no scoring.json."""
    folder = Path(folder)
    saved = ScoringConfig.load(folder) or ScoringConfig(rule=default_rule)
    stats = ScoreStats.load(folder) if (folder / STATS_FILE).exists() else None
    head = InspectionHead(
        model, groups, score=rule or saved.rule, stats=stats,
        smooth_sigma=saved.smooth_sigma, topk_frac=saved.topk_frac, tiling=saved.geometry(),
    )  # fmt: skip
    tile_density = density.DensityStats.load(folder)
    if tile_density is not None:
        density.set_stats(head, tile_density)
    features.load_bank(head, folder)
    return head
