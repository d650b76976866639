"""Seed intervals in the report: means per configuration, g vs g=1 paired, and the V verdict.

Everything here reads the results table and goes through metrics.seeds, so
the numbers on the page are the numbers in results_by_config.csv. The report
calls the best-ELBO trajectory a "V" only when the intervals show one (see
``v_verdict``); with one seed per configuration it says nothing is shown.
"""

from __future__ import annotations

import math

import pandas as pd

from granvae.metrics.seeds import (
    CAPACITY_KEYS,
    aggregate_rows,
    paired_differences,
    tied_with_best,
)
from granvae.report.tables import finished_rows, fmt, has_values

INTERVAL_METRICS = ("elbo", "iwae_elbo", "recall_at_far", "image_auroc", "pixel_auroc", "mig")
PAIRED_METRICS = ("elbo", "recall_at_far", "mig")


def records(table: pd.DataFrame) -> list[dict]:
    """results.csv rows as plain dicts (NaN stays NaN; metrics.seeds skips it)."""
    return table.to_dict("records")


def interval_text(mean: float, low: float, high: float) -> str:
    """`-101.2 [-103, -99.4]`; a lone seed has no interval and says so."""
    if isinstance(mean, float) and math.isnan(mean):
        return "–"
    if isinstance(low, float) and math.isnan(low):
        return f"{fmt(mean)} (1 seed)"
    return f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]"


def config_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: seeds finished, then `mean [95% interval]` per metric."""
    metrics = [m for m in INTERVAL_METRICS if has_values(finished_rows(table), m)]
    rows = []
    for a in aggregate_rows(records(table), metrics):
        row = {"configuration": a["config_id"], "seeds": len(a["seeds"]), "failed": a["n_failed"]}
        for m in metrics:
            mean, low, high = a[f"{m}_mean"], a[f"{m}_ci_low"], a[f"{m}_ci_high"]
            row[f"{m} (95% CI)"] = interval_text(mean, low, high)
        rows.append(row)
    return pd.DataFrame(rows)


def _capacity_label(capacity: dict) -> str:
    parts = [f"β={float(capacity['beta']):g}"] if "beta" in capacity else []
    if "latent_dim" in capacity:
        parts.append(f"D={int(capacity['latent_dim'])}")
    return ", ".join(parts)


def paired_table(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """metric(g) - metric(g=1) per capacity on shared seeds, with interval and p-value."""
    rows = []
    for d in paired_differences(records(table), metric, reference=1):
        rows.append({
            "capacity": _capacity_label(d["capacity"]), "g": d["granularity"],
            "vs g": d["reference"], "paired seeds": d["n"],
            f"Δ {metric} (95% CI)": interval_text(d["mean_diff"], d["ci_low"], d["ci_high"]),
            "p (paired t)": d["p_value"],
            "g made a difference": "yes" if d["differs"] else "not shown",
        })  # fmt: skip
    return pd.DataFrame(rows)


def _trajectories(table: pd.DataFrame, metric: str) -> dict[tuple, list[tuple[float, dict]]]:
    """Capacity lines (all capacity keys but beta) -> [(beta, {"best", "tied"})] by beta."""
    ties = tied_with_best(records(table), metric)
    keys = [k for k in CAPACITY_KEYS if k in table.columns]
    beta_at = keys.index("beta")
    lines: dict[tuple, list[tuple[float, dict]]] = {}
    for cap, tie in ties.items():
        line = cap[:beta_at] + cap[beta_at + 1 :]
        lines.setdefault(line, []).append((float(cap[beta_at]), tie))
    return {k: sorted(v, key=lambda item: item[0]) for k, v in lines.items()}


def tied_ranges(table: pd.DataFrame, metric: str = "elbo") -> dict[tuple[float, int], tuple]:
    """(beta, latent_dim) -> (lowest, highest) granularity tied with the best: the
    trajectory plot's vertical bars."""
    keys = [k for k in CAPACITY_KEYS if k in table.columns]
    out = {}
    for cap, tie in tied_with_best(records(table), metric).items():
        c = dict(zip(keys, cap, strict=True))
        key = (float(c["beta"]), int(c.get("latent_dim", 0) or 0))
        out[key] = (tie["tied"][0], tie["tied"][-1])
    return out


def _find_shape(points: list[tuple[float, dict]], sign: int) -> tuple | None:
    """Betas a < b < c where every tied g at b is below (sign=1) / above (-1) those at a and c."""
    for i, (_, ta) in enumerate(points):
        for j in range(i + 1, len(points)):
            for k in range(j + 1, len(points)):
                tb, tc = points[j][1], points[k][1]
                if sign > 0:
                    ok = min(ta["tied"]) > max(tb["tied"]) < min(tc["tied"])
                else:
                    ok = max(ta["tied"]) < min(tb["tied"]) > max(tc["tied"])
                if ok:
                    return points[i], points[j], points[k]
    return None


def _describe(points: list[tuple[float, dict]]) -> str:
    return "; ".join(f"β={b:g}: best g={t['best']} (tied: {t['tied']})" for b, t in points)


def v_verdict(table: pd.DataFrame, metric: str = "elbo") -> tuple[bool, str]:
    """(shows a V, sentence). The best-g trajectory is a V when, across capacities
    β_a < β_b < β_c, every granularity tied with the best at β_b (paired 95%
    interval of its difference to the best includes 0) is below every tied
    one at β_a and at β_c: the dip survives the seed noise.
    """
    if not has_values(finished_rows(table), metric):
        return False, f"No {metric} values: no trajectory to judge."
    verdicts = []
    for points in _trajectories(table, metric).values():
        if len(points) < 3:
            text = f"Fewer than 3 capacities ({_describe(points)}): no V to show."
            verdicts.append((False, text))
            continue
        v = _find_shape(points, 1)
        if v is not None:
            return True, "The intervals show a V: " + _describe(list(v)) + "."
        flip = _find_shape(points, -1)
        shape = " They show an inverted V instead." if flip else ""
        verdicts.append(
            (False, "The intervals do not show a V: " + _describe(points) + "." + shape)
        )
    return False, " ".join(text for _, text in verdicts)
