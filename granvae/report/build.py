"""build_report: one self-contained HTML page (plus its PNGs) for a sweep folder.

The page answers, in order, what a line engineer and a scientist ask of a
sweep: which candidate is best and why, does the best ELBO trace the paper's
"V" over granularity x capacity, what each granularity buys in
disentanglement and defect recall, what the chosen model sees (traversals,
reconstructions, heatmaps), and which candidates failed and why.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from granvae.data import DatasetMeta, Split, load_dataset
from granvae.metrics.inspection import per_class_table
from granvae.project import recorded_path
from granvae.report import html as H
from granvae.report.intervals import PAIRED_METRICS, config_table, paired_table, v_verdict
from granvae.report.pictures import (
    LoadedCandidate,
    candidate_heatmaps,
    candidate_reconstructions,
    has_defects,
    load_candidate,
    plot_traversals,
    traversal_grid,
    traversal_title,
)
from granvae.report.plots import figure_png, plot_elbo_vs_granularity, plot_metrics_vs_granularity
from granvae.report.tables import (
    NOTHING_PASSED,
    SweepView,
    class_recall_columns,
    g1_partner,
    has_values,
    pick_best,
    read_sweep,
)

logger = logging.getLogger(__name__)

REPORT_DIR = "report"
REPORT_FILE = "report.html"
FIGURES = ("elbo_vs_granularity", "metrics_vs_granularity", "traversals", "reconstructions",
           "heatmaps")  # fmt: skip
KEY_COLUMNS = [
    "candidate_id",
    "status",
    "granularity",
    "beta",
    "latent_dim",
    "seed",
    "epochs",
    "elbo",
    "iwae_elbo",
    "recon",
    "kl",
    "tc_between",
    "image_auroc",
    "recall_at_far",
    "observed_far",
    "pixel_auroc",
    "mig",
    "dci_disentanglement",
    "sap",
    "factor_vae_accuracy",
    "latency_p50_b1_ms",
    "train_seconds",
]
ID_COLUMNS = ["candidate_id", "granularity", "beta", "latent_dim", "seed"]

Data = tuple[dict[str, Split], DatasetMeta]


@dataclass
class Page:
    """What build_report collects: where the PNGs go and the HTML sections so far."""

    out_dir: Path
    sections: list[str] = field(default_factory=list)

    def add_figure(self, name: str, fig, caption: str) -> None:
        """Write the figure beside the page (for MLflow) and embed the same bytes."""
        png = figure_png(fig)
        path = self.out_dir / f"{name}.png"
        path.write_bytes(png)
        self.sections.append(H.embed_png(png, caption) + H.note(caption))


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(fig))
    return path


def _data(view: SweepView, data_dir: Path | str | None) -> Data:
    source = data_dir or recorded_path(view.sweep.get("data_dir"), view.sweep_dir)
    if not source:
        raise FileNotFoundError("no data_dir given and sweep.json names none")
    return load_dataset(source)


def candidate_figures(
    sweep_dir: Path | str,
    candidate_id: str,
    out_dir: Path | str,
    data: Data | None = None,
    data_dir: Path | str | None = None,
) -> list[Path]:
    """traversals/reconstructions(/heatmaps).png of one candidate, for its MLflow child run.

    Heatmaps are skipped on data without defect images (nothing to localise).
    """
    view = read_sweep(sweep_dir)
    splits, meta = data or _data(view, data_dir)
    out_dir = Path(out_dir)
    c = load_candidate(view, candidate_id)
    grid = traversal_grid(c.model, splits["val"].images[0])
    paths = [
        save_figure(
            plot_traversals([(traversal_title(c, "candidate"), grid, c.groups)]),
            out_dir / "traversals.png",
        ),
        save_figure(
            candidate_reconstructions(c, splits["test"], meta), out_dir / "reconstructions.png"
        ),
    ]
    if has_defects(splits["test"]):
        paths.append(
            save_figure(candidate_heatmaps(c, splits["test"], meta), out_dir / "heatmaps.png")
        )
    return paths


def _summary(view: SweepView, best: tuple[str, str] | None) -> str:
    n, done = len(view.table), len(view.finished)
    sweep = view.sweep
    lines = [
        f"Sweep {sweep.get('sweep_id', view.sweep_dir.name)}: {n} candidates, {done} finished, "
        f"{n - done} failed.",
        f"Data: {sweep.get('data_dir', 'unknown')} (version {sweep.get('data_version', '?')}).",
    ]
    parts = [H.heading("Summary")] + [H.note(line) for line in lines]
    if best is None:
        parts.append(
            H.note(
                f"All {n} candidates failed: there is no model to show. "
                "See the failed candidates below for the reasons.",
                "warn",
            )
        )
    else:
        gated_out = best[1].endswith(NOTHING_PASSED)
        label = "Candidate pictured" if gated_out else "Best candidate"
        text = f"{label}: {best[0]}, chosen as {best[1]}."
        parts.append(H.note(text, "warn" if gated_out else "note"))
    return "\n".join(parts)


def _elbo_section(page: Page, view: SweepView) -> None:
    page.sections.append(H.heading("Held-out ELBO vs granularity, with 95% intervals over seeds"))
    if not has_values(view.finished, "elbo"):
        page.sections.append(H.note("No finished candidate has an ELBO.", "warn"))
        return
    fig, best = plot_elbo_vs_granularity(view.table)
    page.add_figure(
        "elbo_vs_granularity",
        fig,
        "Left: held-out ELBO per granularity (seed mean, 95% t interval), one line per "
        "capacity; circles mark the best granularity per capacity, the star the best over "
        "the grid. Right: the best granularity as capacity grows, with a bar over the "
        "granularities whose paired difference to the best includes 0.",
    )
    shows_v, verdict = v_verdict(view.table)
    page.sections.append(H.note(verdict, "note" if shows_v else "warn"))
    rows = [
        {"beta": b, "latent_dim": d, "best granularity": p["granularity"], "ELBO (nats)": p["elbo"]}
        for (b, d), p in sorted(best.items())
    ]
    page.sections.append(H.records_table(rows))


def _intervals_section(page: Page, view: SweepView) -> None:
    """Per-configuration means and intervals, then each g against g=1 on the same seeds."""
    page.sections.append(H.heading("Mean and 95% interval per configuration (over seeds)"))
    page.sections.append(H.html_table(config_table(view.table)))
    page.sections.append(H.note(
        "Student-t interval over the seeds that finished; '(1 seed)' has none. The same "
        "numbers are in results_by_config.csv beside results.csv."
    ))  # fmt: skip
    page.sections.append(H.heading("Did granularity make a difference? (paired over seeds)"))
    metrics = [m for m in PAIRED_METRICS if has_values(view.finished, m)]
    for metric in metrics:
        paired = paired_table(view.table, metric)
        if not paired.empty:
            page.sections.append(H.heading(f"{metric}: each g minus g=1, same seeds", 3))
            page.sections.append(H.html_table(paired))
    page.sections.append(H.note(
        "A difference counts only when its 95% interval excludes 0; with one paired seed "
        "there is no interval and nothing is shown."
    ))  # fmt: skip


def _metrics_section(page: Page, view: SweepView) -> None:
    page.sections.append(H.heading("Disentanglement and inspection metrics vs granularity"))
    fig = plot_metrics_vs_granularity(view.table)
    if fig is None:
        page.sections.append(H.note("No disentanglement or inspection metric was measured."))
        return
    page.add_figure(
        "metrics_vs_granularity",
        fig,
        "Each panel one metric (0-1, higher is better) against granularity.",
    )


def _pictures(page: Page, view: SweepView, best: str, data: Data) -> list[LoadedCandidate]:
    """Side-by-side traversals, then the best candidate's reconstructions and heatmaps."""
    splits, meta = data
    chosen = [load_candidate(view, best)]
    partner = g1_partner(view, best)
    if partner and partner != best:
        chosen.append(load_candidate(view, partner))
    base = splits["val"].images[0]
    panels = [
        (traversal_title(c, role), traversal_grid(c.model, base), c.groups)
        for c, role in zip(chosen, ("best", "g=1 (beta-TCVAE)"), strict=False)
    ]
    page.sections.append(H.heading("Latent traversals: best vs g=1"))
    if len(chosen) == 1:
        page.sections.append(
            H.note(
                "The best candidate has g=1 or no g=1 counterpart at its "
                "capacity finished; only it is shown."
            )
        )
    page.add_figure(
        "traversals",
        plot_traversals(panels),
        "Rows are latent dimensions, coloured and framed by their group.",
    )
    page.sections.append(H.heading("Reconstructions"))
    page.add_figure(
        "reconstructions",
        candidate_reconstructions(chosen[0], splits["test"], meta),
        "Top: test parts; bottom: the best model's reconstruction of each.",
    )
    page.sections.append(H.heading("Anomaly heatmaps on defect parts"))
    if has_defects(splits["test"]):
        page.add_figure(
            "heatmaps",
            candidate_heatmaps(chosen[0], splits["test"], meta),
            "Bright = pixels the model cannot explain; cyan = the true defect.",
        )
    else:
        page.sections.append(H.note("This data set has no defect images: heatmaps skipped."))
    return chosen


def _recall_section(page: Page, view: SweepView, best: str | None, meta: DatasetMeta | None):
    page.sections.append(H.heading("Defect recall per class"))
    cols = [c for c in class_recall_columns(view.table) if has_values(view.finished, c)]
    if not cols:
        page.sections.append(
            H.note(
                "No per-class recall: this data set has no defect images "
                "(or no candidate finished)."
            )
        )
        return
    shown = [*ID_COLUMNS, "recall_at_far", "recall_at_far_lo", "recall_at_far_hi", "observed_far",
             "active_units", *cols]  # fmt: skip
    keep = [c for c in shown if c in view.table]
    page.sections.append(H.html_table(view.finished[keep], highlight=best))
    if best is not None:
        page.sections.append(_best_class_table(view, best, meta))


def _best_class_table(view: SweepView, best: str, meta: DatasetMeta | None) -> str:
    """per_class_table of the best candidate from its own scores.npz and threshold."""
    cdir = view.candidate_dir(best)
    try:
        if meta is None:
            raise FileNotFoundError("the data set (class names) is unavailable")
        arrays = np.load(cdir / "scores.npz")
        value = float(json.loads((cdir / "threshold.json").read_text())["value"])
        rows = per_class_table(
            arrays["test_score"], arrays["test_labels"], value, meta.class_names,
            severity=arrays["test_severity"] if "test_severity" in arrays else None,
        )  # fmt: skip
    except (OSError, KeyError, ValueError) as err:
        return H.note(f"Per-class table of {best} unavailable: {err}", "warn")
    title = f"What the line would do with {best} (threshold {value:.4g})"
    return H.heading(title, 3) + H.records_table(rows)


def _tables_section(page: Page, view: SweepView, best: str | None) -> None:
    """The full results (key columns), failed candidates with reasons, the decision table."""
    page.sections.append(H.heading("All candidates (key columns)"))
    keep = [c for c in KEY_COLUMNS if c in view.table]
    page.sections.append(H.html_table(view.table[keep], highlight=best))
    page.sections.append(H.note("All columns are in results.csv beside this report's folder."))
    page.sections.append(H.heading("Failed candidates"))
    if view.failed.empty:
        page.sections.append(H.note("No candidate failed."))
    else:
        page.sections.append(H.html_table(view.failed[["candidate_id", "reason"]]))
    page.sections.append(H.heading("Selection decision"))
    if view.decision_md:
        page.sections.append(H.preformatted(view.decision_md))
    elif view.decision is not None:
        page.sections.append(H.html_table(view.decision))
    else:
        page.sections.append(H.note(
            "No decision table yet: `granvae register SWEEP` (or a retrain) selects and "
            "writes decision.md beside results.csv."
        ))  # fmt: skip


def _load_data(page: Page, view: SweepView, data_dir: Path | str | None) -> Data | None:
    """The data set, or None with a note: tables and plots still work without images."""
    try:
        return _data(view, data_dir)
    except Exception as err:  # noqa: BLE001 - a report without pictures beats no report
        logger.warning("report: pictures skipped, data set unavailable: %s", err)
        page.sections.append(H.note(f"Pictures skipped: data set unavailable ({err}).", "warn"))
        return None


def _model_pictures(page: Page, view: SweepView, best: str, data: Data, every: bool) -> None:
    """The page's pictures, then the per-candidate PNGs (best and g=1, or every finished one).

    A candidate folder that cannot be read (a model file lost, a data set of
    another shape) costs the pictures, with a note, never the whole report.
    """
    try:
        chosen = _pictures(page, view, best, data)
        ids = list(view.finished["candidate_id"]) if every else [c.candidate_id for c in chosen]
        for cid in ids:
            candidate_figures(view.sweep_dir, cid, page.out_dir / "candidates" / cid, data=data)
    except Exception as err:  # noqa: BLE001 - a report without pictures beats no report
        logger.warning("report: pictures failed: %s", err)
        page.sections.append(H.note(f"Pictures failed: {type(err).__name__}: {err}", "warn"))


def clear_report_dir(out_dir: Path) -> Path:
    """Remove what an earlier report wrote, so tracking never logs a stale picture."""
    shutil.rmtree(out_dir / "candidates", ignore_errors=True)
    for name in [f"{fig}.png" for fig in FIGURES] + [REPORT_FILE]:
        (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def build_report(
    sweep_dir: Path | str, data_dir: Path | str | None = None, all_candidates: bool = False
) -> Path:
    """Write <sweep_dir>/report/report.html (self-contained) and its PNGs; return the page.

    data_dir defaults to sweep.json's "data_dir". Per-candidate PNGs
    (report/candidates/<id>/) are made for the best and g=1 candidates, or for
    every finished candidate with all_candidates=True.
    """
    view = read_sweep(sweep_dir)
    out_dir = clear_report_dir(view.sweep_dir / REPORT_DIR)
    page = Page(out_dir)
    best = pick_best(view)
    page.sections.append(_summary(view, best))
    best_id = best[0] if best else None
    meta = None
    if best_id is not None:
        _elbo_section(page, view)
        _intervals_section(page, view)
        _metrics_section(page, view)
        data = _load_data(page, view, data_dir)
        if data is not None:
            meta = data[1]
            _model_pictures(page, view, best_id, data, all_candidates)
    _recall_section(page, view, best_id, meta)
    _tables_section(page, view, best_id)
    path = out_dir / REPORT_FILE
    path.write_text(H.page(f"granvae sweep report — {view.sweep_dir.name}", page.sections))
    return path
