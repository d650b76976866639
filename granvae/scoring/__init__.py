"""The inspection head: anomaly maps, score rules and the good-image statistics they use.

One file per job: maps (pixel maps and reductions), stats (what is fitted on good
images and shipped), head (the rules and the exported module), fit (fitting and loading).
"""

from granvae.scoring.fit import build_head, fit_head, load_head, save_head_scoring
from granvae.scoring.head import (
    FUSION_PARTS,
    NEEDS_STATS,
    RULES,
    SCORES,
    InspectionHead,
    InspectionOutput,
    score_all_rules,
)
from granvae.scoring.stats import ScoreStats, ScoringConfig
from granvae.scoring.tiled import score_images

__all__ = [
    "FUSION_PARTS",
    "NEEDS_STATS",
    "RULES",
    "SCORES",
    "InspectionHead",
    "InspectionOutput",
    "ScoreStats",
    "ScoringConfig",
    "build_head",
    "fit_head",
    "load_head",
    "save_head_scoring",
    "score_all_rules",
    "score_images",
]
