"""The selection policy: gates first, then a ranking; the policy is data, not code.

Why gates before ranking: a candidate that misses the line's latency budget or its recall
floor is not a trade-off, it is unusable, so no score may buy it back. Among the candidates
that pass, the ranking is either lexicographic (a business metric, ELBO as the tie-break)
or a weighted score over min-max normalised metrics. The result is a `Decision` that says
*why* in words, because the registered model's description shows it to the people who
promote models.

Pure: no mlflow, no torch. `load_rows`, `load_scores` (granvae.select_evidence) and
`write_decision` are the only file I/O.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from granvae.metrics.bootstrap import Interval
from granvae.metrics.seeds import aggregate_rows
from granvae.select_evidence import EvalScores, load_scores, paired_differences

__all__ = ["Decision", "Gate", "SelectionPolicy", "load_rows", "load_scores", "select"]

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
    """Best `primary` wins unless others are tied with the leader; then best `tie_break`,
    then the simpler model (fewer latent dimensions), then the documented order
    (smaller granularity, smaller beta, smaller seed; the id only when all of these agree).

    Tied with the leader means within `primary_tolerance`, or, with `within_noise` and the
    per-image evaluation scores of both (``select(..., scores=...)``), a paired bootstrap
    interval of recall(candidate) - recall(leader) that holds zero: both resampled on the
    same images, the threshold recalibrated in each replicate. Two separate intervals that
    overlap are not evidence of a tie (0.19 [0.05, 0.47] vs 0.48 [0.35, 0.68] overlap while
    the paired difference is +0.29 [0.08, 0.45]).
    """

    mode: Literal["lexicographic"] = "lexicographic"
    primary: str = "recall_at_far"
    tie_break: str = "elbo"
    primary_tolerance: float = Field(1e-9, ge=0)
    primary_higher_is_better: bool = True
    tie_break_higher_is_better: bool = True
    within_noise: bool = True
    level: float = Field(0.95, gt=0, lt=1)  # of the paired interval
    bootstrap: int = Field(1000, ge=100)  # paired replicates
    simpler: str = "latent_dim"  # lower is simpler; then ORDER_COLUMNS, then the id


class Weighted(BaseModel):
    """score = sum_m w_m * minmax(m); a negative weight penalises (e.g. latency)."""

    mode: Literal["weighted"] = "weighted"
    weights: dict[str, float] = Field(
        default_factory=lambda: {"recall_at_far": 0.7, "elbo": 0.3}, min_length=1
    )


MIN_RECALL = 0.5  # at the calibrated false-alarm rate; a model below it catches too little


def default_gates() -> list[Gate]:
    """The same gates as params.yaml `select.gates`: a model that catches fewer than half the
    defects, or whose latents collapsed, is not a candidate at any ELBO."""
    return [
        Gate(metric="status", op="==", value="finished"),
        Gate(metric="recall_at_far", op=">=", value=MIN_RECALL),
        Gate(metric="latency_p95_b1_ms", op="<=", value=50.0),
        Gate(metric="onnx_parity", op=">=", value=1.0, optional=True),
        Gate(metric="active_units", op=">=", value=1.0, optional=True),
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


ORDER_COLUMNS = ("granularity", "beta", "seed")  # the documented order after simplicity


def _order(row: dict, ranking: Lexicographic) -> tuple:
    """The deterministic order after the tie-break: simpler model, then ORDER_COLUMNS
    ascending, the id last (two candidates agreeing on all of these are the same config)."""

    def low(name: str) -> float:
        v = _num(row.get(name))
        return math.inf if math.isnan(v) else v

    return (low(ranking.simpler), *(low(c) for c in ORDER_COLUMNS), str(row["candidate_id"]))


def _signed(row: dict, metric: str, higher_is_better: bool) -> float:
    """Larger is better; NaN becomes -inf so it sorts last."""
    v = (1.0 if higher_is_better else -1.0) * _num(row.get(metric))
    return -math.inf if math.isnan(v) else v


def leader(rows: list[dict], ranking: Lexicographic) -> dict:
    """Best primary; equal primaries go to the tie-break, then the documented order."""
    return min(rows, key=lambda r: (
        -_signed(r, ranking.primary, ranking.primary_higher_is_better),
        -_signed(r, ranking.tie_break, ranking.tie_break_higher_is_better),
        _order(r, ranking),
    ))  # fmt: skip


def paired_vs(
    ref: str, rows: list[dict], ranking: Lexicographic, scores: Mapping[str, EvalScores] | None
) -> dict[str, Interval]:
    """recall(c) - recall(ref) on the same images, for every c with pairable scores."""
    if not (ranking.within_noise and scores):
        return {}
    others = [str(r["candidate_id"]) for r in rows if str(r["candidate_id"]) != ref]
    return paired_differences(ref, others, scores, ranking.bootstrap, ranking.level)


def tied_with(
    ref: dict, rows: list[dict], ranking: Lexicographic, evidence: dict[str, Interval]
) -> set[str]:
    """Candidates that cannot be told apart from ``ref``: within the tolerance, or their
    paired interval of the difference holds zero."""
    p_ref = _signed(ref, ranking.primary, ranking.primary_higher_is_better)
    tied = {str(ref["candidate_id"])}
    for r in rows:
        cid = str(r["candidate_id"])
        p = _signed(r, ranking.primary, ranking.primary_higher_is_better)
        close = math.isfinite(p) and abs(p - p_ref) <= ranking.primary_tolerance
        iv = evidence.get(cid)
        if close or (iv is not None and iv.low <= 0.0 <= iv.high):
            tied.add(cid)
    return tied


def _lexicographic(
    rows: list[dict], ranking: Lexicographic, tied: set[str]
) -> list[tuple[str, float]]:
    """Candidates in rank order with their score (the primary metric): the leader's tie
    group first, ordered by the tie-break then the documented order, then everyone else
    by primary. Input order and ids other than as the last resort play no part."""

    def key(row: dict) -> tuple:
        p = _signed(row, ranking.primary, ranking.primary_higher_is_better)
        t = _signed(row, ranking.tie_break, ranking.tie_break_higher_is_better)
        group = 0 if str(row["candidate_id"]) in tied else 1
        return (group, 0.0 if group == 0 else -p, -t, _order(row, ranking))

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


def _why_lexicographic(
    ranked: list, rows: dict[str, dict], ranking: Lexicographic, lead: str, tied: set[str],
    evidence: dict[str, Interval],
) -> str:
    win, p_win = ranked[0]
    if len(ranked) == 1:
        return (
            f"{win} wins: the only candidate passing every gate ({ranking.primary} {_fmt(p_win)})"
        )
    runner = ranked[1][0]
    paired = " (paired, same images)" if evidence else " (no per-image scores: tolerance only)"
    if len(tied) == 1:
        iv = evidence.get(runner)
        diff = (
            f"; {runner} - {win} = {iv.estimate:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]" if iv else ""
        )
        return (
            f"{win} wins: {ranking.primary} {_describe(rows[win], ranking.primary)} vs "
            f"{_describe(rows[runner], ranking.primary)} for the runner-up {runner}{diff}"
            f"{paired}; {ranking.tie_break} tie-break not needed"
        )
    other = win if win != lead else next(c for c, _ in ranked if c in tied and c != lead)
    iv = evidence.get(other)
    diff = f", {other} - {lead} = {iv.estimate:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]" if iv else ""
    how = "tie within noise: the paired interval holds 0" if iv else "tied"
    t_win, t_run = _num(rows[win].get(ranking.tie_break)), _num(rows[runner].get(ranking.tie_break))
    return (
        f"{win} wins: {ranking.primary} {how} for {len(tied)} candidates led by {lead}{diff}"
        f"{paired}; {ranking.tie_break} tie-break {_fmt(t_win)} vs {_fmt(t_run)} ({runner}), "
        f"then the simpler model ({ranking.simpler}), then {', '.join(ORDER_COLUMNS)}"
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


def select(
    rows: list[dict[str, Any]],
    policy: SelectionPolicy | None = None,
    scores: Mapping[str, EvalScores] | None = None,
) -> Decision:
    """Gate every candidate, rank the survivors, explain the winner (or why there is none).

    ``scores`` (``load_scores(sweep_dir, rows)``) gives the per-image evidence for paired
    ties; without it candidates tie only within the tolerance."""
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
        lead = leader(survivors, ranking)
        lead_id = str(lead["candidate_id"])
        evidence = paired_vs(lead_id, survivors, ranking, scores)
        tied = tied_with(lead, survivors, ranking, evidence)
        ranked = _lexicographic(survivors, ranking, tied)
        src = {str(r["candidate_id"]): r for r in rows}
        why = _why_lexicographic(ranked, src, ranking, lead_id, tied, evidence)
    else:
        ranked = _weighted(survivors, ranking)
        why = _why_weighted(ranked, ranking)
    by_id = {t["candidate_id"]: t for t in table}
    for rank, (cid, score) in enumerate(ranked, start=1):
        by_id[cid].update(score=score, rank=rank)
    if isinstance(ranking, Lexicographic):
        _add_evidence(table, survivors, ranking, ranked[0][0], scores)
    why += f" ({len(survivors)} of {len(rows)} candidates passed the gates)"
    by_config = aggregate_rows(rows, [m for m in SEED_METRICS if any(m in r for r in rows)])
    return Decision(table, ranked[0][0], why, labels, dump, by_config)


def _add_evidence(
    table: list[dict], survivors: list[dict], ranking: Lexicographic, winner: str,
    scores: Mapping[str, EvalScores] | None,
) -> None:
    """Each candidate's own interval, its paired difference to the *winner*, and whether
    that paired interval holds zero (`tied_with_winner`, None for gated-out candidates)."""
    src = {str(r["candidate_id"]): r for r in survivors}
    vs_winner = paired_vs(winner, survivors, ranking, scores)
    tied = tied_with(src[winner], survivors, ranking, vs_winner)
    for t in table:
        cid = t["candidate_id"]
        iv = _interval(src[cid], ranking.primary) if cid in src else None
        t[f"{ranking.primary}_95ci"] = f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else None
        d = vs_winner.get(cid)
        t["vs_winner"] = f"{d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" if d else None
        t["tied_with_winner"] = cid in tied if t["rank"] else None


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
