"""The selection policy: gates first, then a ranking; the policy is data, not code.

Why gates before ranking: a candidate that misses the line's latency budget or its recall
floor is not a trade-off, it is unusable, so no score may buy it back. Among the candidates
that pass, the ranking is either lexicographic (a business metric, ELBO as the tie-break)
or a weighted score over min-max normalised metrics. The result is a `Decision` that says
*why* in words, because the registered model's description shows it to the people who
promote models.

Pure: no mlflow, no torch. `load_rows` and `write_decision` are the only file I/O.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from granvae.metrics.seeds import aggregate_rows

Op = Literal[">=", "<=", ">", "<", "=="]
_OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
}
SEED_METRICS = ("recall_at_far", "image_auroc", "elbo")  # pooled over seeds in the decision
DECISION_CSV = "decision.csv"
DECISION_MD = "decision.md"


class Gate(BaseModel):
    """`metric op value` must hold; `optional` gates apply only where the column exists."""

    metric: str
    op: Op = ">="
    value: float | str
    optional: bool = False

    @property
    def label(self) -> str:
        value = self.value if isinstance(self.value, str) else f"{self.value:g}"
        return f"{self.metric} {self.op} {value}"

    def applies(self, rows: list[dict[str, Any]]) -> bool:
        """An optional gate (e.g. ONNX parity before export) is skipped when no row has it."""
        return not self.optional or any(_present(r.get(self.metric)) for r in rows)

    def check(self, row: dict[str, Any]) -> tuple[Any, bool]:
        """(the row's value, passed); a missing or NaN value fails the gate."""
        value = row.get(self.metric)
        if not _present(value):
            return None, False
        if isinstance(self.value, str) or isinstance(value, str):
            return value, _OPS[self.op](str(value), str(self.value))
        return value, bool(_OPS[self.op](float(value), float(self.value)))


class Lexicographic(BaseModel):
    """Best `primary` wins unless the leaders are tied; then best `tie_break`, then the
    simpler model (fewer latent dimensions).

    Tied means within `primary_tolerance`, or, with `within_noise` and the rows carrying
    `<primary>_lo` / `<primary>_hi` (the bootstrap interval), an interval that overlaps the
    leader's: a recall that differs by 2 defects out of 128 is noise, not a winner.
    """

    mode: Literal["lexicographic"] = "lexicographic"
    primary: str = "recall_at_far"
    tie_break: str = "elbo"
    primary_tolerance: float = Field(1e-9, ge=0)
    primary_higher_is_better: bool = True
    tie_break_higher_is_better: bool = True
    within_noise: bool = True
    simpler: str = "latent_dim"  # lower is simpler; the last tie-break before the id


class Weighted(BaseModel):
    """score = sum_m w_m * minmax(m); a negative weight penalises (e.g. latency)."""

    mode: Literal["weighted"] = "weighted"
    weights: dict[str, float] = Field(
        default_factory=lambda: {"recall_at_far": 0.7, "elbo": 0.3}, min_length=1
    )


def default_gates() -> list[Gate]:
    return [
        Gate(metric="status", op="==", value="finished"),
        Gate(metric="recall_at_far", op=">=", value=0.0),
        Gate(metric="latency_p95_b1_ms", op="<=", value=50.0),
        Gate(metric="onnx_parity", op=">=", value=1.0, optional=True),
    ]


class SelectionPolicy(BaseModel):
    """params.yaml `select:` validates into this (`SelectionPolicy.model_validate(dict)`)."""

    gates: list[Gate] = Field(default_factory=default_gates)
    ranking: Annotated[Lexicographic | Weighted, Field(discriminator="mode")] = Field(
        default_factory=Lexicographic
    )


@dataclass
class Decision:
    """The decision table and its verdict; `winner` is None when every candidate failed."""

    rows: list[dict[str, Any]]
    winner: str | None
    why: str
    gates: list[str] = field(default_factory=list)
    policy: dict[str, Any] = field(default_factory=dict)
    by_config: list[dict[str, Any]] = field(default_factory=list)  # seeds pooled per config

    def row(self, candidate_id: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["candidate_id"] == candidate_id)

    @property
    def passed(self) -> list[str]:
        return [r["candidate_id"] for r in self.rows if r["passed_all"]]


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return not (isinstance(value, str) and value.strip() == "")


def _num(value: Any) -> float:
    """A metric as a float, NaN when absent or not numeric (NaN sorts last below)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _gate_table(rows: list[dict], gates: list[Gate]) -> list[dict[str, Any]]:
    table = []
    for row in rows:
        out: dict[str, Any] = {"candidate_id": str(row.get("candidate_id"))}
        ok = True
        for gate in gates:
            value, passed = gate.check(row)
            out[gate.metric] = value
            out[gate.label] = "pass" if passed else "FAIL"
            ok = ok and passed
        out.update(score=None, rank=None, passed_all=ok)
        table.append(out)
    return table


def _interval(row: dict, metric: str) -> tuple[float, float] | None:
    lo, hi = _num(row.get(f"{metric}_lo")), _num(row.get(f"{metric}_hi"))
    return None if math.isnan(lo) or math.isnan(hi) else (lo, hi)


def tied_with_leader(rows: list[dict], ranking: Lexicographic) -> set[str]:
    """Candidates whose primary metric cannot be told apart from the leader's."""
    sign = 1.0 if ranking.primary_higher_is_better else -1.0
    value = {str(r["candidate_id"]): sign * _num(r.get(ranking.primary)) for r in rows}
    finite = {k: v for k, v in value.items() if not math.isnan(v)}
    if not finite:
        return set()
    leader = max(sorted(finite), key=lambda k: finite[k])
    lead_row = next(r for r in rows if str(r["candidate_id"]) == leader)
    lead_iv = _interval(lead_row, ranking.primary) if ranking.within_noise else None
    tied = set()
    for r in rows:
        cid = str(r["candidate_id"])
        if cid not in finite:
            continue
        close = abs(finite[cid] - finite[leader]) <= ranking.primary_tolerance
        iv = _interval(r, ranking.primary) if lead_iv else None
        overlap = bool(iv and lead_iv and iv[0] <= lead_iv[1] and lead_iv[0] <= iv[1])
        if close or overlap:
            tied.add(cid)
    return tied


def _lexicographic(rows: list[dict], ranking: Lexicographic) -> list[tuple[str, float]]:
    """Candidates in rank order with their score (the primary metric): the leader's tie
    group first, ordered by the tie-break then simplicity, then everyone else by primary."""
    sign_p = 1.0 if ranking.primary_higher_is_better else -1.0
    sign_t = 1.0 if ranking.tie_break_higher_is_better else -1.0
    tied = tied_with_leader(rows, ranking)

    def neg_inf(v: float) -> float:
        return -math.inf if math.isnan(v) else v

    def key(row: dict) -> tuple:
        cid = str(row["candidate_id"])
        p = neg_inf(sign_p * _num(row.get(ranking.primary)))
        t = neg_inf(sign_t * _num(row.get(ranking.tie_break)))
        simple = _num(row.get(ranking.simpler))
        simple = math.inf if math.isnan(simple) else simple
        if cid in tied:
            return (0, 0.0, -t, simple, cid)
        return (1, -p, -t, simple, cid)

    ordered = sorted(rows, key=key)
    return [(str(r["candidate_id"]), _num(r.get(ranking.primary))) for r in ordered]


def _weighted(rows: list[dict], ranking: Weighted) -> list[tuple[str, float]]:
    """Min-max normalise each weighted metric over the passing candidates, then sum."""
    scores = {str(r["candidate_id"]): 0.0 for r in rows}
    for metric, weight in ranking.weights.items():
        values = {str(r["candidate_id"]): _num(r.get(metric)) for r in rows}
        finite = [v for v in values.values() if not math.isnan(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
        for cid, v in values.items():
            norm = 0.0 if math.isnan(v) else (1.0 if hi == lo else (v - lo) / (hi - lo))
            scores[cid] += weight * norm
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def _all_fail_reason(table: list[dict], gates: list[Gate]) -> str:
    parts = []
    for gate in gates:
        failed = [r for r in table if r[gate.label] == "FAIL"]
        if failed:
            values = [_fmt(r[gate.metric]) for r in failed[:3]]
            parts.append(
                f"{gate.label} failed for {len(failed)}/{len(table)} ({', '.join(values)})"
            )
    hint = ""
    if any(g.metric.startswith("latency") and any(r[g.label] == "FAIL" for r in table)
           for g in gates):  # fmt: skip
        hint = (
            ". Latency is the best p95 of several timing rounds on this host (latency_rounds); "
            "a host busy for the whole measurement still inflates it: rerun the evaluation "
            "when the machine is quiet, or raise the gate in params.yaml select.gates"
        )
    return "no candidate passed the gates: " + "; ".join(parts) + hint


def _describe(row: dict, metric: str) -> str:
    iv = _interval(row, metric)
    value = _fmt(_num(row.get(metric)))
    return f"{value} [{_fmt(iv[0])}, {_fmt(iv[1])}]" if iv else value


def _why_lexicographic(ranked: list, rows: dict[str, dict], ranking: Lexicographic) -> str:
    win, p_win = ranked[0]
    if len(ranked) == 1:
        return (
            f"{win} wins: the only candidate passing every gate ({ranking.primary} {_fmt(p_win)})"
        )
    tied = tied_with_leader([rows[c] for c, _ in ranked], ranking) - {win}
    runner = ranked[1][0]
    if not tied:
        return (
            f"{win} wins: {ranking.primary} {_describe(rows[win], ranking.primary)} vs "
            f"{_describe(rows[runner], ranking.primary)} for the runner-up {runner}; "
            f"{ranking.tie_break} tie-break not needed"
        )
    t_win = _num(rows[win].get(ranking.tie_break))
    t_run = _num(rows[runner].get(ranking.tie_break))
    noisy = ranking.within_noise and _interval(rows[win], ranking.primary) is not None
    how = "tie within noise (intervals overlap)" if noisy else "tied"
    return (
        f"{win} wins: {ranking.primary} {how} with {len(tied)} other(s), e.g. {runner} "
        f"({_describe(rows[win], ranking.primary)} vs {_describe(rows[runner], ranking.primary)}"
        f"); {ranking.tie_break} tie-break {_fmt(t_win)} vs {_fmt(t_run)}, "
        f"then the simpler model ({ranking.simpler})"
    )


def _why_weighted(ranked: list, ranking: Weighted) -> str:
    weights = ", ".join(f"{m} {w:g}" for m, w in ranking.weights.items())
    win, s_win = ranked[0]
    if len(ranked) == 1:
        return f"{win} wins: the only candidate passing every gate (weighted score {s_win:.4g})"
    runner, s_run = ranked[1]
    return (
        f"{win} wins: weighted score {s_win:.4g} vs {s_run:.4g} for the runner-up {runner} "
        f"(min-max normalised; weights {weights})"
    )


def select(rows: list[dict[str, Any]], policy: SelectionPolicy | None = None) -> Decision:
    """Gate every candidate, rank the survivors, explain the winner (or why there is none)."""
    policy = policy or SelectionPolicy()
    gates = [g for g in policy.gates if g.applies(rows)]
    table = _gate_table(rows, gates)
    labels = [g.label for g in gates]
    dump = policy.model_dump(mode="json")
    survivors = [r for r, t in zip(rows, table, strict=True) if t["passed_all"]]
    if not rows:
        return Decision(table, None, "no candidates in the results table", labels, dump)
    if not survivors:
        return Decision(table, None, _all_fail_reason(table, gates), labels, dump)
    ranking = policy.ranking
    if isinstance(ranking, Lexicographic):
        ranked = _lexicographic(survivors, ranking)
        why = _why_lexicographic(ranked, {str(r["candidate_id"]): r for r in rows}, ranking)
    else:
        ranked = _weighted(survivors, ranking)
        why = _why_weighted(ranked, ranking)
    by_id = {t["candidate_id"]: t for t in table}
    for rank, (cid, score) in enumerate(ranked, start=1):
        by_id[cid].update(score=score, rank=rank)
    if isinstance(ranking, Lexicographic):
        _add_intervals(table, rows, ranking, ranked)
    why += f" ({len(survivors)} of {len(rows)} candidates passed the gates)"
    by_config = aggregate_rows(rows, [m for m in SEED_METRICS if any(m in r for r in rows)])
    return Decision(table, ranked[0][0], why, labels, dump, by_config)


def _add_intervals(table: list[dict], rows: list[dict], ranking: Lexicographic, ranked) -> None:
    """The decision table shows each candidate's interval and who is tied with the winner."""
    src = {str(r["candidate_id"]): r for r in rows}
    tied = tied_with_leader([src[c] for c, _ in ranked], ranking)
    for t in table:
        iv = _interval(src[t["candidate_id"]], ranking.primary)
        t[f"{ranking.primary}_95ci"] = f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else None
        t["tied_with_winner"] = t["candidate_id"] in tied if t["rank"] else None


def load_rows(sweep_dir: Path | str) -> list[dict[str, Any]]:
    """The sweep's results table as plain dicts (results.json keeps NaN as null)."""
    return json.loads((Path(sweep_dir) / "results.json").read_text())


def decision_markdown(decision: Decision) -> str:
    """The table people read in the registry: one line per candidate, winner first."""
    cols = list(decision.rows[0]) if decision.rows else ["candidate_id"]
    ordered = sorted(decision.rows, key=lambda r: (r["rank"] is None, r["rank"] or 0))
    lines = [f"**Decision:** {decision.why}", "", "| " + " | ".join(cols) + " |"]
    lines.append("|" + "---|" * len(cols))
    for row in ordered:
        cells = ["" if row[c] is None else _fmt(row[c]) for c in cols]
        if row["candidate_id"] == decision.winner:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + _seed_table(decision.by_config)) + "\n"


def _seed_table(by_config: list[dict[str, Any]]) -> list[str]:
    """Mean and 95% t interval over seeds per configuration, when any has several seeds."""
    if not any(c.get("n_seeds", 0) > 1 for c in by_config):
        return []
    metrics = [m for m in SEED_METRICS if f"{m}_mean" in by_config[0]]
    lines = ["", "Per configuration over seeds (mean [95% interval]):", "",
             "| config | seeds | " + " | ".join(metrics) + " |", "|" + "---|" * (2 + len(metrics))]
    for c in by_config:
        cells = [f"{_fmt(c[f'{m}_mean'])} [{_fmt(c[f'{m}_ci_low'])}, {_fmt(c[f'{m}_ci_high'])}]"
                 for m in metrics]  # fmt: skip
        lines.append(f"| {c['config_id']} | {c['n_seeds']} | " + " | ".join(cells) + " |")
    return lines


def _csv_value(value: Any) -> Any:
    """NaN and None become empty cells; floats keep full precision."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else value


def write_decision(decision: Decision, sweep_dir: Path | str) -> tuple[Path, Path]:
    """decision.csv (machine) and decision.md (people) beside the results table."""
    sweep_dir = Path(sweep_dir)
    cols = list(decision.rows[0]) if decision.rows else ["candidate_id"]
    csv_path, md_path = sweep_dir / DECISION_CSV, sweep_dir / DECISION_MD
    with csv_path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: _csv_value(r[c]) for c in cols} for r in decision.rows)
    md_path.write_text("# Candidate selection\n\n" + decision_markdown(decision))
    return csv_path, md_path
