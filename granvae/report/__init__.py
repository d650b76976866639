"""The sweep report: the V-trajectory, metrics vs granularity, traversals,
reconstructions, heatmaps and the tables, as one self-contained HTML page.

Split into a package because it outgrew one file: tables (reading the sweep,
picking the best), plots (table-only figures), pictures (model-based
figures), html (page pieces) and build (assembly).
"""

from granvae.report.build import build_report, candidate_figures
from granvae.report.html import embed_png
from granvae.report.tables import best_overall, best_per_capacity, pick_best, read_sweep

__all__ = [
    "best_overall",
    "best_per_capacity",
    "build_report",
    "candidate_figures",
    "embed_png",
    "pick_best",
    "read_sweep",
]
