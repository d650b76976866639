"""The names of the score rules, without torch: what `evaluation.score` may say.

granvae.config checks params.yaml's `evaluation.score` / `tile_score` against these on every
command, including the read-only registry ones (`granvae models`), which must not import
torch to do it (benchmarks/cli_startup.py). The rules themselves are computed in
granvae.scoring.head (whole-image rules, which asserts it implements exactly SCORES) and
granvae.scoring.density (the tile densities); both re-export these names.
"""

from __future__ import annotations

# Whole-image rules (granvae.scoring.head.RULES implements each).
SCORES = (
    "neg_elbo", "recon", "nll_max", "l2_max", "l2_topk", "ssim_max", "ssim_topk",
    "zres_max", "zres_topk", "latent", "fusion", "feat_knn",
)  # fmt: skip

# Tile densities (granvae.scoring.density): rule -> indices of the standardised parts it sums
PARTS = ("tile_elbo", "tile_knn", "res_max")
DENSITY_RULES: dict[str, tuple[int, ...]] = {
    "tile_elbo": (0,),
    "tile_knn": (1,),
    "res_max": (2,),
    "tile_fusion": (0, 1, 2),
}

# Rules a tiled head can use: rule -> (the raw per-pixel map each tile emits, the reduction of
# the stitched, smoothed map). Smoothing waits until the maps are stitched, so a tile border
# never sees a padded edge; the summed and latent rules have no full-size map to stitch.
TILE_RULES: dict[str, tuple[str, str]] = {
    "nll_max": ("nll_raw", "max"),
    "l2_max": ("l2_raw", "max"),
    "l2_topk": ("l2_raw", "topk"),
    "ssim_max": ("ssim_raw", "max"),
    "ssim_topk": ("ssim_raw", "topk"),
    "zres_max": ("zres_raw", "max"),
    "zres_topk": ("zres_raw", "topk"),
    # densities of the tile (granvae.scoring.density): stitched, never smoothed
    **{rule: (rule, "max") for rule in DENSITY_RULES},
}
UNSMOOTHED_TILE_RULES = frozenset(DENSITY_RULES)
