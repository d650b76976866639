"""Markdown tables of a multi-seed granularity sweep: per g, mean and 95% interval over
seeds, and the paired difference to g = 1 on the same seeds (granvae.metrics.seeds).

    python benchmarks/granularity_tables.py runs/exp/g-surfaces [--plot docs/results/x.png]

Metrics: recall at the calibrated 1% false-alarm threshold (all defects and per class),
image AUROC, observed false-alarm rate and held-out ELBO (nats per good test image).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from granvae.metrics.seeds import aggregate_rows, paired_differences  # noqa: E402


def _metrics(rows: list[dict]) -> list[str]:
    classes = sorted({k for r in rows for k in r if k.startswith("recall_")
                      and not k.startswith(("recall_at_far", "recall_severity"))})  # fmt: skip
    return ["recall_at_far", *classes, "image_auroc", "observed_far", "elbo"]


def _iv(mean: float, lo: float, hi: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "-"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _digits(metric: str) -> int:
    return 1 if metric == "elbo" else 3


def by_g_table(rows: list[dict], metrics: list[str]) -> str:
    aggs = sorted(aggregate_rows(rows, metrics), key=lambda a: a["granularity"])
    lines = ["| g | seeds | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for a in aggs:
        cells = [_iv(a[f"{m}_mean"], a[f"{m}_ci_low"], a[f"{m}_ci_high"], _digits(m))
                 for m in metrics]  # fmt: skip
        lines.append(f"| {a['granularity']} | {a['n_seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(rows: list[dict], metrics: list[str]) -> str:
    lines = ["| metric | g | mean diff vs g=1 [95% CI] | paired t p | differs |",
             "|---|---|---|---|---|"]  # fmt: skip
    for m in metrics:
        for d in paired_differences(rows, m, reference=1):
            p = "-" if not math.isfinite(d["p_value"]) else f"{d['p_value']:.3f}"
            iv = _iv(d["mean_diff"], d["ci_low"], d["ci_high"], _digits(m))
            lines.append(f"| {m} | {d['granularity']} | {iv} | {p} | "
                         f"{'yes' if d['differs'] else 'no'} |")  # fmt: skip
    return "\n".join(lines)


def per_seed_table(rows: list[dict], metrics: list[str]) -> str:
    lines = ["| candidate | epochs | train s | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r["granularity"], r["seed"])):
        cells = [f"{r.get(m, math.nan):.{_digits(m)}f}" for m in metrics]
        lines.append(
            f"| {r['candidate_id']} | {r.get('epochs')} | "
            f"{r.get('train_seconds', math.nan):.0f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--plot", type=Path, help="also save the report's ELBO-vs-g figure here")
    args = ap.parse_args()
    rows = [r for r in json.loads((args.sweep / "results.json").read_text())
            if r.get("status") == "finished"]  # fmt: skip
    for r in rows:
        r.update({k: math.nan for k, v in r.items() if v is None})
    metrics = _metrics(rows)
    print(by_g_table(rows, metrics), "\n")
    print(paired_table(rows, metrics), "\n")
    print(per_seed_table(rows, metrics))
    if args.plot:
        from granvae.report.build import save_figure
        from granvae.report.plots import plot_elbo_vs_granularity
        from granvae.sweep import read_results

        fig, _ = plot_elbo_vs_granularity(read_results(args.sweep))
        save_figure(fig, args.plot)


if __name__ == "__main__":
    main()
