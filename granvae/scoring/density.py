"""Scores that are densities of the tile: how a texture-scale model judges a textured line.

On a texture (brick, grass, gravel) a good tile is not a smooth surface with a small
residual: it is one draw from a repeating pattern. A residual map smoothed over a few
pixels (``l2_max``) mixes the model's ordinary reconstruction error of busy texture with
the defect and lands near chance (docs/inspection.md). A tile-scale model trained on good
tiles knows the pattern's *density*; these rules ask how unusual each tile is:

    tile_elbo    the tile's negative ELBO (sum of its NLL map + KL of its code), painted
                 over the tile: a tile the model finds improbable
    tile_knn     distance of the tile's code (posterior mean) to its nearest neighbour in a
                 greedy k-centre coreset of good training tiles' codes (PatchCore's
                 memory bank, on the VAE's own codes; no downloaded weights)
    res_max      the unsmoothed per-pixel squared residual: a thin defect the model cannot
                 reconstruct, kept at its own scale
    tile_fusion  the sum of the three, each standardised on good training tiles

Each part is standardised by the mean and spread of its per-tile maximum over good
training tiles (held apart from the tiles that build the coreset, or a coreset code would
measure zero distance to itself), so parts in different units can be summed. Every rule
emits a per-tile map; the tiled scorer stitches the maps (mean over overlapping tiles) and
takes the maximum *without* smoothing (stitching overlapping tiles already averages them).
The coreset and the moments are constants of the exported graph and ship in the
candidate's ``tile_density.npz``; the edge only stitches and takes the max.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from granvae.distributions import kl_to_standard_normal
from granvae.score_rules import DENSITY_RULES, PARTS  # re-exported; torch-free names

DENSITY_FILE = "tile_density.npz"
FIT_TILES = 8192  # good grid tiles drawn from training images (half coreset, half moments)
CORESET_SIZE = 1024  # codes the coreset keeps: the k-NN's cost on the edge is tiles x this


class _PassLike(Protocol):
    """What a density part needs from the head's forward pass (granvae.scoring.head._Pass)."""

    head: torch.nn.Module
    mu: torch.Tensor
    logvar: torch.Tensor

    def map(self, name: str) -> torch.Tensor: ...


@dataclass(frozen=True)
class DensityStats:
    """float32 arrays: coreset (K, D) of good tile codes; part_mean, part_std (len(PARTS),)."""

    coreset: np.ndarray
    part_mean: np.ndarray
    part_std: np.ndarray

    def save(self, directory: Path | str) -> Path:
        path = Path(directory) / DENSITY_FILE
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **asdict(self))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, directory: Path | str) -> DensityStats | None:
        """The candidate's density statistics, or None when it has none (a whole-image model)."""
        path = Path(directory) / DENSITY_FILE
        if not path.exists():
            return None
        with np.load(path) as data:
            missing = [k for k in ("coreset", "part_mean", "part_std") if k not in data]
            if missing:
                raise ValueError(f"{path}: missing arrays {missing}")
            return cls(*(np.asarray(data[k], np.float32) for k in ("coreset", "part_mean",
                                                                    "part_std")))  # fmt: skip


def greedy_coreset(codes: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a greedy k-centre coreset (Sener & Savarese 2018; PatchCore's subsampling):
    each step adds the code farthest from those kept, so the kept codes cover the good codes
    with the smallest radius greedy can find and rare-but-good tiles keep a neighbour."""
    n = len(codes)
    if size >= n:
        return np.arange(n)
    x = codes.astype(np.float64)
    chosen = [int(rng.integers(n))]
    dist = np.linalg.norm(x - x[chosen[0]], axis=1)
    for _ in range(size - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(x - x[nxt], axis=1))
    return np.asarray(chosen)


def register_buffers(head: torch.nn.Module, latent_dim: int) -> None:
    """Placeholders the fitted statistics replace (graph constants once exported)."""
    head.register_buffer("density_coreset", torch.zeros(1, latent_dim))
    head.register_buffer("density_mean", torch.zeros(len(PARTS)))
    head.register_buffer("density_std", torch.ones(len(PARTS)))
    head.density_fitted = False


def set_stats(head: torch.nn.Module, stats: DensityStats) -> None:
    d = head.density_coreset.shape[1]
    if stats.coreset.ndim != 2 or stats.coreset.shape[1] != d or len(stats.coreset) < 1:
        raise ValueError(f"density coreset of shape {stats.coreset.shape}, model needs (K, {d})")
    if stats.part_mean.shape != (len(PARTS),) or stats.part_std.shape != (len(PARTS),):
        raise ValueError(f"density moments need shape ({len(PARTS)},)")
    if not all(np.all(np.isfinite(a)) for a in (stats.coreset, stats.part_mean, stats.part_std)):
        raise ValueError("density statistics are not finite")
    head.density_coreset = torch.as_tensor(stats.coreset, dtype=torch.float32)
    head.density_mean.copy_(torch.as_tensor(stats.part_mean))
    head.density_std.copy_(torch.as_tensor(stats.part_std))
    head.density_fitted = True


def get_stats(head: torch.nn.Module) -> DensityStats:
    return DensityStats(
        *(getattr(head, n).detach().cpu().numpy() for n in
          ("density_coreset", "density_mean", "density_std"))
    )  # fmt: skip


def nearest_distance(codes: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of each (N, D) code to its nearest row of the (K, D) bank.

    Differences first, not |a|^2 - 2ab + |b|^2: near a bank code that expansion cancels to
    float32 noise, whose square root torch and onnxruntime round differently (measured:
    1e-4 apart on distances that are 0). Sub/Mul/ReduceSum/ReduceMin export to any opset."""
    diff = codes[:, None, :] - bank[None, :, :]
    return (diff * diff).sum(2).min(1).values.sqrt()


def raw_parts(p: _PassLike) -> list[torch.Tensor]:
    """The unstandardised parts: two per-tile values (N,) and one per-pixel map (N, H, W)."""
    neg_elbo = p.map("nll_raw").flatten(1).sum(1) + kl_to_standard_normal(p.mu, p.logvar).sum(1)
    return [neg_elbo, nearest_distance(p.mu, p.head.density_coreset), p.map("l2_raw")]


def tile_map(p: _PassLike, rule: str) -> torch.Tensor:
    """(N, tile, tile) map of ``rule`` for each tile: its standardised parts summed, a per-tile
    value painted over the whole tile."""
    if not p.head.density_fitted:
        raise ValueError(f"score rule {rule!r} needs the tile density statistics (fit_density)")
    parts = raw_parts(p)
    like = parts[2]
    out = torch.zeros_like(like)
    for i in DENSITY_RULES[rule]:
        z = (parts[i] - p.head.density_mean[i]) / p.head.density_std[i]
        out = out + (z if z.dim() == 3 else z[:, None, None].expand_as(like))
    return out


def tile_maxima(p: _PassLike) -> np.ndarray:
    """(N, len(PARTS)) per-tile maximum of each raw part: what the moments are fitted on."""
    parts = raw_parts(p)
    return torch.stack([parts[0], parts[1], parts[2].flatten(1).max(1).values], 1).numpy()
