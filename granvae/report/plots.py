"""Plots drawn from the results table alone: the ELBO "V" and the metrics vs granularity.

Figures are built with matplotlib's object API (Figure + Agg canvas), never
pyplot, so the report has no global state and no display backend to pick.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from granvae.report.intervals import tied_ranges
from granvae.report.tables import (
    best_overall,
    best_per_capacity,
    class_recall_columns,
    has_values,
    seed_summary,
)

DISENTANGLEMENT = {
    "mig": "MIG (0-1, higher = more disentangled)",
    "dci_disentanglement": "DCI disentanglement (0-1)",
    "sap": "SAP score (0-1)",
    "factor_vae_accuracy": "FactorVAE score (accuracy, 0-1)",
}
INSPECTION = {
    "image_auroc": "image AUROC (defect vs good)",
    "recall_at_far": "defect recall at the agreed false-alarm rate",
    "pixel_auroc": "pixel AUROC (defect location)",
}


def new_figure(width: float, height: float) -> Figure:
    """A Figure on an Agg canvas: savefig works without pyplot or a display."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of a figure: written to disk for MLflow and embedded in the HTML."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def capacity_label(beta: float, dim: int, several_dims: bool) -> str:
    return f"β={beta:g}, D={dim}" if several_dims else f"β={beta:g}"


def _capacities(summary: pd.DataFrame) -> list[tuple[float, int]]:
    pairs = summary[["beta", "latent_dim"]].drop_duplicates().itertuples(index=False)
    return sorted((float(b), int(d)) for b, d in pairs)


def _errorbar_lines(ax, summary: pd.DataFrame) -> dict[tuple[float, int], str]:
    """One line per capacity: seed mean with 95% interval whiskers (none for a lone seed)."""
    caps = _capacities(summary)
    several = len({d for _, d in caps}) > 1
    colours = {}
    for i, (beta, dim) in enumerate(caps):
        part = summary[(summary["beta"] == beta) & (summary["latent_dim"] == dim)]
        low, high = part["low"].fillna(part["mean"]), part["high"].fillna(part["mean"])
        err = np.vstack([part["mean"] - low, high - part["mean"]])
        line = ax.errorbar(
            part["granularity"],
            part["mean"],
            yerr=err,
            marker="o",
            capsize=3,
            color=f"C{i % 10}",
            label=capacity_label(beta, dim, several),
        )
        colours[(beta, dim)] = line[0].get_color()
    ax.set_xticks(sorted(summary["granularity"].unique()))
    ax.grid(alpha=0.3)
    return colours


def _mark_best(ax, table: pd.DataFrame, colours: dict) -> dict:
    """Circle the best granularity per capacity, star the overall best, annotate it."""
    best = best_per_capacity(table)
    for key, point in best.items():
        ax.scatter(
            point["granularity"],
            point["elbo"],
            s=180,
            facecolors="none",
            edgecolors=colours.get(key, "k"),
            linewidths=2,
            zorder=5,
        )
    top = best_overall(table)
    if top is not None:
        ax.scatter(
            top["granularity"],
            top["elbo"],
            marker="*",
            s=320,
            color="gold",
            edgecolors="k",
            zorder=6,
            label="best over the grid",
        )
        ax.annotate(
            f"best: g={top['granularity']}, β={top['beta']:g}\nELBO {top['elbo']:.1f}",
            (top["granularity"], top["elbo"]),
            textcoords="offset points",
            xytext=(10, -28),
            fontsize=9,
            bbox={"boxstyle": "round", "fc": "lightyellow", "alpha": 0.9},
        )
    return best


def _trajectory_panel(ax, summary: pd.DataFrame, best: dict, ties: dict) -> None:
    """Best granularity per capacity vs beta (the paper's "V" trajectory), with a bar
    over the granularities the seeds cannot tell apart from the best."""
    several = len({d for _, d in best}) > 1
    for i, dim in enumerate(sorted({d for _, d in best})):
        keys = sorted(k for k in best if k[1] == dim)
        ys = np.array([best[k]["granularity"] for k in keys], dtype=float)
        lo = np.array([ties.get(k, (y, y))[0] for k, y in zip(keys, ys, strict=True)])
        hi = np.array([ties.get(k, (y, y))[1] for k, y in zip(keys, ys, strict=True)])
        ax.errorbar(
            [k[0] for k in keys],
            ys,
            yerr=np.vstack([ys - lo, hi - ys]),
            fmt="o--",
            capsize=4,
            color=f"C{i}",
            label=f"D={dim}" if several else None,
        )
    ax.set_xscale("log", base=2)
    betas = sorted({k[0] for k in best})
    ax.set_xticks(betas, [f"{b:g}" for b in betas])
    ax.set_yticks(sorted(summary["granularity"].unique().astype(int)))
    ax.set_xlabel("capacity β (total-correlation weight)")
    ax.set_ylabel("granularity with the best ELBO")
    ax.set_title("Best-ELBO trajectory (bars: g tied with the best, paired 95%)", fontsize=10)
    ax.grid(alpha=0.3)
    if several:
        ax.legend(fontsize=8)


def plot_elbo_vs_granularity(table: pd.DataFrame) -> tuple[Figure, dict]:
    """Held-out ELBO vs granularity, one line per capacity; returns (figure, best points)."""
    summary = seed_summary(table, "elbo")
    fig = new_figure(12, 4.8)
    ax, traj = fig.subplots(1, 2, width_ratios=[2, 1])
    colours = _errorbar_lines(ax, summary)
    best = _mark_best(ax, table, colours)
    ax.set_xlabel("granularity g (latent dimensions per independent group)")
    ax.set_ylabel("held-out ELBO (nats, higher is better)")
    ax.set_title(
        "Held-out ELBO vs granularity (circles: best g per capacity; bars: 95% interval)",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="best")
    _trajectory_panel(traj, summary, best, tied_ranges(table))
    return fig, best


def metric_labels(table: pd.DataFrame) -> dict[str, str]:
    """Metrics worth a panel: the known ones plus recall_<class>, when they hold numbers."""
    labels = {**DISENTANGLEMENT, **INSPECTION}
    for col in class_recall_columns(table):
        labels[col] = f"recall of '{col.removeprefix('recall_')}' defects"
    return {k: v for k, v in labels.items() if has_values(table, k)}


def plot_metrics_vs_granularity(table: pd.DataFrame) -> Figure | None:
    """Small multiples of every available disentanglement / inspection metric vs g."""
    labels = metric_labels(table)
    if not labels:
        return None
    cols = min(4, len(labels))
    rows = -(-len(labels) // cols)
    fig = new_figure(max(3.8 * cols, 7.5), 3.0 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (metric, label) in zip(axes, labels.items(), strict=False):
        _errorbar_lines(ax, seed_summary(table, metric))
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("granularity g")
        ax.set_ylim(-0.05, 1.05)
    for ax in axes[len(labels) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8, title="capacity")
    fig.suptitle(
        "Disentanglement and inspection metrics vs granularity (seed mean, bars: 95% interval)"
    )
    return fig
