"""The inspection head: one module that turns a trained VAE into anomaly scores.

The same head computes the business metrics in torch and becomes the ONNX graph on the
edge, so the threshold calibrated in training means the same thing on the line. Scores
are deterministic (z = posterior mean).

Score rules (``evaluation.score`` in params.yaml; the manifest records which):

    neg_elbo   sum of the NLL map + KL (the ELBO's own number; drowns small defects)
    recon      sum of the NLL map
    nll_max    max of the smoothed NLL map (learned per-pixel variance when the decoder has it)
    l2_max / l2_topk        smoothed squared error: max / mean of the top k pixels
    ssim_max / ssim_topk    smoothed 1 - SSIM(x, reconstruction) (Bergmann et al. 2019)
    zres_max / zres_topk    smoothed squared residual normalised per pixel by good images
    feat_knn   smoothed distance of each position's first-layer feature to its nearest good
               one in a coreset bank (granvae.scoring.features; textured lines)
    latent     Mahalanobis distance of the posterior mean to good images' codes
    fusion     sum of zres_topk, ssim_topk and latent, each standardised on good images

Rules that need statistics of good images (zres_*, latent, fusion) read them from
buffers filled by :func:`granvae.scoring.fit.fit_head`; they are graph constants on export.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from granvae.distributions import kl_to_standard_normal, recon_mean, recon_nll_map
from granvae.models import FactorizedVAE
from granvae.objectives import group_matrix
from granvae.score_rules import SCORES, TILE_RULES, UNSMOOTHED_TILE_RULES  # noqa: F401 - torch-free
from granvae.scoring import density, features, maps
from granvae.scoring.stats import ScoreStats, ScoringConfig
from granvae.scoring.tiling import Tiling

FUSION_PARTS = ("zres_topk", "ssim_topk", "latent")
NEEDS_STATS = frozenset({"zres_max", "zres_topk", "latent", "fusion"})


class InspectionOutput(NamedTuple):
    """Field names become the ONNX output names."""

    score: torch.Tensor
    anomaly_map: torch.Tensor
    latent_mean: torch.Tensor
    group_attribution: torch.Tensor


class _Pass:
    """One forward pass's tensors, with maps computed on first use (the graph keeps only
    what the chosen rule needs)."""

    def __init__(self, head: InspectionHead, images: torch.Tensor) -> None:
        self.head = head
        self.x = images.permute(0, 3, 1, 2).float() / 255.0
        self.mu, self.logvar = head.model.encode(self.x)
        self.params = head.model.decode(self.mu)
        self._maps: dict[str, torch.Tensor] = {}

    def nll(self) -> torch.Tensor:
        cfg = self.head.model.config
        return recon_nll_map(cfg.likelihood, self.x, self.params, cfg.obs_std).sum(1)

    def residual(self) -> torch.Tensor:
        return self.x - recon_mean(self.head.model.config.likelihood, self.params)

    def map(self, name: str) -> torch.Tensor:
        if name not in self._maps:
            self._maps[name] = self._make(name)
        return self._maps[name]

    def _make(self, name: str) -> torch.Tensor:
        h = self.head
        if name == "nll_raw":
            return self.nll()
        if name == "nll":
            return maps.smooth_map(self.map("nll_raw"), h.smooth_kernel)
        if name == "l2_raw":
            return self.residual().pow(2).sum(1)
        if name == "ssim_raw":
            recon = recon_mean(h.model.config.likelihood, self.params)
            return 1.0 - maps.ssim_map(self.x, recon, h.ssim_kernel)
        if name == "zres_raw":
            return ((self.residual() - h.pixel_mean) / h.pixel_std).pow(2).sum(1)
        if name == "feat_raw":
            return features.distance_map(h, self.x)
        if name in ("l2", "ssim", "zres", "feat"):
            return maps.smooth_map(self.map(f"{name}_raw"), h.smooth_kernel)
        if name in density.DENSITY_RULES:
            return density.tile_map(self, name)
        raise KeyError(name)


def _latent(p: _Pass) -> torch.Tensor:
    return maps.mahalanobis_sq(p.mu, p.head.latent_mean, p.head.latent_precision)


def _fusion(p: _Pass) -> torch.Tensor:
    parts = torch.stack([RULES[name][0](p) for name in FUSION_PARTS], dim=1)
    return ((parts - p.head.fusion_mean) / p.head.fusion_std).sum(1)


def _kl(p: _Pass) -> torch.Tensor:
    return kl_to_standard_normal(p.mu, p.logvar).sum(1)


ScoreFn = Callable[[_Pass], torch.Tensor]
# rule -> (score function, the map the rule shows as anomaly_map)
RULES: dict[str, tuple[ScoreFn, str]] = {
    "neg_elbo": (lambda p: maps.sum_value(p.map("nll_raw")) + _kl(p), "nll_raw"),
    "recon": (lambda p: maps.sum_value(p.map("nll_raw")), "nll_raw"),
    "nll_max": (lambda p: maps.max_value(p.map("nll")), "nll"),
    "l2_max": (lambda p: maps.max_value(p.map("l2")), "l2"),
    "l2_topk": (lambda p: maps.topk_mean(p.map("l2"), p.head.topk), "l2"),
    "ssim_max": (lambda p: maps.max_value(p.map("ssim")), "ssim"),
    "ssim_topk": (lambda p: maps.topk_mean(p.map("ssim"), p.head.topk), "ssim"),
    "zres_max": (lambda p: maps.max_value(p.map("zres")), "zres"),
    "zres_topk": (lambda p: maps.topk_mean(p.map("zres"), p.head.topk), "zres"),
    "latent": (_latent, "l2"),
    "fusion": (_fusion, "zres"),
    "feat_knn": (lambda p: maps.max_value(p.map("feat")), "feat"),
}
assert set(RULES) == set(SCORES)



def check_tile_rule(rule: str) -> tuple[str, str]:
    if rule not in TILE_RULES:
        raise ValueError(
            f"score rule {rule!r} cannot score tiles (it has no per-pixel map to stitch); "
            f"tiled models use one of {', '.join(TILE_RULES)}"
        )
    return TILE_RULES[rule]


class TileGraph(nn.Module):
    """The module a tiled head exports: its forward is the head's tile_outputs."""

    def __init__(self, head: InspectionHead) -> None:
        super().__init__()
        self.head = head
        self.likelihood = head.likelihood

    @property
    def model(self) -> FactorizedVAE:
        return self.head.model

    def forward(self, tiles: torch.Tensor) -> InspectionOutput:
        return self.head.tile_outputs(tiles)


class InspectionHead(nn.Module):
    """uint8 NHWC images in; the rule's score, its anomaly map, latent means and the KL of
    each latent group (which factor group carries the image away from the prior)."""

    def __init__(
        self,
        model: FactorizedVAE,
        groups: list[list[int]],
        score: str = "neg_elbo",
        stats: ScoreStats | None = None,
        smooth_sigma: float = 2.0,
        topk_frac: float = 0.01,
        tiling: Tiling | None = None,
    ) -> None:
        super().__init__()
        if score not in SCORES and score not in density.DENSITY_RULES:
            raise ValueError(f"score must be one of {SCORES + tuple(density.DENSITY_RULES)}, "
                             f"got {score!r}")  # fmt: skip
        if score in density.DENSITY_RULES and tiling is None:
            raise ValueError(f"score rule {score!r} is a density of the tile: it needs tiles "
                             "(tiling.tile, or a tile size in sweep.tiles)")  # fmt: skip
        if score in features.FEATURE_RULES:
            features.first_conv(model)  # an MLP encoder is refused here, not at scoring time
        cfg = model.config
        self.score_kind = score
        # Set: the model sees tiles of a larger part (granvae.scoring.tiled scores full images).
        self.tiling = tiling
        self.model = model.eval()
        self.likelihood = cfg.likelihood
        self.smooth_sigma, self.topk_frac = float(smooth_sigma), float(topk_frac)
        self.topk = max(1, int(round(topk_frac * cfg.image_size**2)))
        self.register_buffer("groups", group_matrix(groups, cfg.latent_dim, torch.zeros(1)))
        self.register_buffer("smooth_kernel", maps.gaussian_kernel(smooth_sigma))
        self.register_buffer("ssim_kernel", maps.gaussian_kernel(maps.SSIM_SIGMA, radius=5))
        shape, d = (cfg.in_channels, cfg.image_size, cfg.image_size), cfg.latent_dim
        self.register_buffer("pixel_mean", torch.zeros(shape))
        self.register_buffer("pixel_std", torch.ones(shape))
        self.register_buffer("latent_mean", torch.zeros(d))
        self.register_buffer("latent_precision", torch.eye(d))
        self.register_buffer("fusion_mean", torch.zeros(len(FUSION_PARTS)))
        self.register_buffer("fusion_std", torch.ones(len(FUSION_PARTS)))
        density.register_buffers(self, d)
        features.register_buffers(self, model)
        self.stats_fitted = False
        if stats is not None:
            self.set_stats(stats)
        elif score in NEEDS_STATS:
            raise ValueError(f"score {score!r} needs statistics of good images (fit_head)")

    @property
    def config(self) -> ScoringConfig:
        t = self.tiling
        return ScoringConfig(
            self.score_kind, self.smooth_sigma, self.topk_frac,
            tile=None if t is None else t.tile, stride=None if t is None else t.stride,
        )  # fmt: skip

    def set_stats(self, stats: ScoreStats) -> None:
        for name in ScoreStats.__dataclass_fields__:
            buf = getattr(self, name)
            value = torch.as_tensor(np.asarray(getattr(stats, name)), dtype=buf.dtype)
            if value.shape != buf.shape:
                raise ValueError(f"score stats {name}: shape {tuple(value.shape)}, "
                                 f"model needs {tuple(buf.shape)}")  # fmt: skip
            buf.copy_(value)
        self.stats_fitted = True

    def stats(self) -> ScoreStats:
        names = ScoreStats.__dataclass_fields__
        return ScoreStats(**{n: getattr(self, n).detach().cpu().numpy() for n in names})

    def forward(self, images: torch.Tensor) -> InspectionOutput:
        p = _Pass(self, images)
        score_fn, map_name = RULES[self.score_kind]
        attribution = kl_to_standard_normal(p.mu, p.logvar) @ self.groups
        return InspectionOutput(score_fn(p), p.map(map_name), p.mu, attribution)

    def tile_outputs(self, tiles: torch.Tensor) -> InspectionOutput:
        """uint8 NHWC tiles in; per tile: the max of the rule's raw map (which tile explains
        the image), the raw map to stitch, latent means and group KL. The tiled graph."""
        raw_name, _ = check_tile_rule(self.score_kind)
        p = _Pass(self, tiles)
        raw = p.map(raw_name)
        attribution = kl_to_standard_normal(p.mu, p.logvar) @ self.groups
        return InspectionOutput(maps.max_value(raw), raw, p.mu, attribution)

    def all_scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every rule's score from one pass (the benchmark compares rules on one model)."""
        p = _Pass(self, images)
        usable = [r for r in SCORES if (self.stats_fitted or r not in NEEDS_STATS)
                  and (self.feature_fitted or r not in features.FEATURE_RULES)]
        return {rule: RULES[rule][0](p) for rule in usable}


def batches_nhwc(images: np.ndarray, batch_size: int, device):
    """uint8 NCHW (the dataset layout) in, NHWC tensor batches (the graph's input) out."""
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        yield batch.permute(0, 2, 3, 1).to(device)


def outputs_in_batches(
    forward: Callable[[torch.Tensor], InspectionOutput],
    images: np.ndarray,
    batch_size: int,
    device: torch.device | str,
) -> dict[str, torch.Tensor]:
    """Every InspectionOutput field of ``forward`` over uint8 NCHW images, batch by batch,
    concatenated as float tensors on the CPU."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in InspectionOutput._fields}
    for batch in batches_nhwc(images, batch_size, device):
        for name, value in forward(batch)._asdict().items():
            parts[name].append(value.float().cpu())
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


@torch.no_grad()
def score_all_rules(
    head: InspectionHead, images: np.ndarray, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """{rule: scores} for every rule the head can compute, one pass per batch."""
    parts: dict[str, list[np.ndarray]] = {}
    head = head.cpu()
    for batch in batches_nhwc(images, batch_size, "cpu"):
        for rule, value in head.all_scores(batch).items():
            parts.setdefault(rule, []).append(value.float().numpy())
    return {rule: np.concatenate(chunks) for rule, chunks in parts.items()}
