"""Reading a sweep folder (docs/contracts.md, "Sweep folder") into what the report shows.

Everything here is plain pandas on results.csv, so the choices the report
makes (which candidate is "best", which point on the V is marked) can be
tested on hand-made tables without training a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from granvae.metrics.seeds import mean_interval

CAPACITY = ["latent_dim", "beta"]
GRID = [*CAPACITY, "granularity"]
FINISHED = "finished"


@dataclass
class SweepView:
    """One sweep folder as the report reads it; missing optional files are None."""

    sweep_dir: Path
    table: pd.DataFrame
    sweep: dict = field(default_factory=dict)
    decision: pd.DataFrame | None = None
    decision_md: str | None = None

    @property
    def finished(self) -> pd.DataFrame:
        return finished_rows(self.table)

    @property
    def failed(self) -> pd.DataFrame:
        return self.table[self.table["status"] != FINISHED]

    def row(self, candidate_id: str) -> pd.Series:
        rows = self.table[self.table["candidate_id"] == candidate_id]
        if rows.empty:
            raise KeyError(f"{candidate_id!r} is not a candidate of {self.sweep_dir}")
        return rows.iloc[0]

    def candidate_dir(self, candidate_id: str) -> Path:
        return self.sweep_dir / "candidates" / candidate_id


def read_sweep(sweep_dir: Path | str) -> SweepView:
    """Load results.csv (required), sweep.json and decision.csv/.md (optional)."""
    sweep_dir = Path(sweep_dir)
    results = sweep_dir / "results.csv"
    if not results.exists():
        raise FileNotFoundError(f"{results} not found: is {sweep_dir} a finished sweep folder?")
    table = pd.read_csv(results)
    sweep_file = sweep_dir / "sweep.json"
    sweep = json.loads(sweep_file.read_text()) if sweep_file.exists() else {}
    dec_csv, dec_md = sweep_dir / "decision.csv", sweep_dir / "decision.md"
    return SweepView(
        sweep_dir,
        table,
        sweep,
        pd.read_csv(dec_csv) if dec_csv.exists() else None,
        dec_md.read_text() if dec_md.exists() else None,
    )


def finished_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Finished candidates only; a table without a status column counts as all finished."""
    if "status" not in table:
        return table
    return table[table["status"] == FINISHED]


def has_values(table: pd.DataFrame, column: str) -> bool:
    """True when the column exists and holds at least one finite number."""
    if column not in table:
        return False
    values = pd.to_numeric(table[column], errors="coerce")
    return bool(np.isfinite(values).any())


def seed_summary(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and 95% t interval (low, high) of a metric over seeds per (latent_dim, beta, g).

    Seeds are repeats of the same candidate; the interval is what the error
    bars show, so a reader can tell a real trend from seed noise. With one
    seed low and high are NaN: there is no interval to draw.
    """
    rows = finished_rows(table)
    rows = rows.assign(_v=pd.to_numeric(rows[metric], errors="coerce"))
    rows = rows[np.isfinite(rows["_v"])]
    keys = [k for k in GRID if k in rows]
    if rows.empty:
        return pd.DataFrame(columns=[*keys, "mean", "low", "high", "n"])
    out = [
        {**dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
         **mean_interval(part["_v"])}
        for key, part in rows.groupby(keys)
    ]  # fmt: skip
    return pd.DataFrame(out).sort_values(keys, ignore_index=True)


def capacity_key(row: pd.Series) -> tuple[float, int]:
    """(beta, latent_dim): the capacity one line of the V plot stands for."""
    return float(row["beta"]), int(row.get("latent_dim", 0) or 0)


def best_per_capacity(table: pd.DataFrame, metric: str = "elbo") -> dict[tuple[float, int], dict]:
    """The best granularity per capacity: {(beta, latent_dim): {"granularity", metric}}.

    ELBO is a log-likelihood bound, so higher is better and the best is the
    maximum of the seed-mean. These are the points the paper's "V" trajectory
    joins across capacities.
    """
    summary = seed_summary(table, metric)
    best: dict[tuple[float, int], dict] = {}
    for _, row in summary.iterrows():
        key = capacity_key(row)
        if key not in best or row["mean"] > best[key][metric]:
            best[key] = {"granularity": int(row["granularity"]), metric: float(row["mean"])}
    return best


def best_overall(table: pd.DataFrame, metric: str = "elbo") -> dict | None:
    """The single best (beta, latent_dim, granularity) point over the whole grid, or None."""
    best = best_per_capacity(table, metric)
    if not best:
        return None
    (beta, dim), point = max(best.items(), key=lambda item: item[1][metric])
    return {"beta": beta, "latent_dim": dim, **point}


def _decision_winner(decision: pd.DataFrame | None) -> str | None:
    """decision.csv names the winner by a truthy `winner` column or `rank == 1`."""
    if decision is None or "candidate_id" not in decision:
        return None
    if "winner" in decision:
        flags = decision["winner"].astype(str).str.lower().isin(["true", "1", "1.0", "yes"])
        if flags.any():
            return str(decision.loc[flags, "candidate_id"].iloc[0])
    if "rank" in decision:
        top = decision[pd.to_numeric(decision["rank"], errors="coerce") == 1]
        if not top.empty:
            return str(top["candidate_id"].iloc[0])
    return None


NOTHING_PASSED = "no candidate passed the gates (decision.md), so nothing ships"


def pick_best(view: SweepView) -> tuple[str, str] | None:
    """(candidate_id, why): the selection policy's winner, else best recall, else best ELBO.

    The report follows select.py when it has run, so the pictures show the
    model that would ship; before that, recall at the agreed false-alarm rate
    is what the line cares about, and ELBO is the fallback on defect-free data.
    """
    finished = view.finished
    winner = _decision_winner(view.decision)
    if winner is not None and winner in set(finished["candidate_id"]):
        return winner, "the winner of the selection table (decision.csv)"
    for metric, why in (
        ("recall_at_far", "the highest defect recall at the agreed false-alarm rate"),
        ("elbo", "the highest held-out ELBO"),
    ):
        if has_values(finished, metric):
            ranked = finished.assign(_v=pd.to_numeric(finished[metric], errors="coerce"))
            keys = ["_v", "elbo"] if "elbo" in ranked else ["_v"]  # ELBO breaks recall ties
            ranked = ranked.sort_values(keys, ascending=False, na_position="last", kind="stable")
            if view.decision is not None:  # selection ran and nothing passed its gates
                why = f"{why}, shown for reference only: {NOTHING_PASSED}"
            return str(ranked["candidate_id"].iloc[0]), why
    return None


def g1_partner(view: SweepView, candidate_id: str) -> str | None:
    """The g=1 (beta-TCVAE) candidate at the same capacity, preferring the same seed."""
    me = view.row(candidate_id)
    rows = view.finished
    rows = rows[(rows["granularity"] == 1) & (rows["beta"] == me["beta"])]
    if "latent_dim" in rows:
        rows = rows[rows["latent_dim"] == me["latent_dim"]]
    if rows.empty:
        return None
    same_seed = rows[rows["seed"] == me["seed"]]
    return str((same_seed if not same_seed.empty else rows)["candidate_id"].iloc[0])


def class_recall_columns(table: pd.DataFrame) -> list[str]:
    """recall_<class> columns (not recall_at_far nor the severity bands)."""
    return [
        c
        for c in table.columns
        if c.startswith("recall_") and c != "recall_at_far" and not c.startswith("recall_severity")
    ]


def fmt(value: object) -> str:
    """Numbers to 4 significant digits, NaN to an en dash, so tables stay narrow."""
    if isinstance(value, float | np.floating):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)
