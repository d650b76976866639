"""The selection policy on hand-made results tables: gates, ranking, ties, all-fail."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.stats import norm
from sweep_fixtures import candidate_row

from granvae.metrics.thresholds import calibrate_threshold
from granvae.select import (
    Decision,
    Gate,
    SelectionPolicy,
    decision_markdown,
    select,
    write_decision,
)
from granvae.select_evidence import EvalScores


def _policy(**overrides) -> SelectionPolicy:
    raw = {
        "gates": [
            {"metric": "status", "op": "==", "value": "finished"},
            {"metric": "recall_at_far", "op": ">=", "value": 0.5},
            {"metric": "latency_p95_b1_ms", "op": "<=", "value": 10.0},
            {"metric": "onnx_parity", "op": ">=", "value": 1, "optional": True},
        ],
        "ranking": {"mode": "lexicographic", "primary": "recall_at_far", "tie_break": "elbo"},
    }
    raw.update(overrides)
    return SelectionPolicy.model_validate(raw)


def _by_id(decision: Decision) -> dict[str, dict]:
    return {r["candidate_id"]: r for r in decision.rows}


def test_primary_metric_decides_and_why_names_the_runner_up():
    rows = [candidate_row(1, 0.80, -100.0), candidate_row(2, 0.83, -130.0)]
    decision = select(rows, _policy())
    assert decision.winner == "g2-b4-d4-s0"
    assert "recall_at_far 0.83 vs 0.8 for the runner-up g1-b4-d4-s0" in decision.why
    assert "tie-break not needed" in decision.why
    table = _by_id(decision)
    assert (table["g2-b4-d4-s0"]["rank"], table["g1-b4-d4-s0"]["rank"]) == (1, 2)
    assert table["g2-b4-d4-s0"]["recall_at_far >= 0.5"] == "pass"


def test_tie_on_primary_is_broken_by_elbo_within_tolerance():
    rows = [candidate_row(1, 0.80, -120.0), candidate_row(2, 0.80 + 1e-12, -100.0)]
    rows.append(candidate_row(4, 0.80 - 1e-12, -90.0))
    decision = select(rows, _policy())
    assert decision.winner == "g4-b4-d4-s0"  # best ELBO among three tied on recall
    assert "tied for 3 candidates led by g2-b4-d4-s0" in decision.why  # no per-image scores
    assert "tolerance only" in decision.why
    assert "elbo tie-break -90 vs -100" in decision.why
    wide = _policy(ranking={"mode": "lexicographic", "primary_tolerance": 0.05})
    rows = [candidate_row(1, 0.80, -120.0), candidate_row(2, 0.84, -100.0)]
    assert select(rows, wide).winner == "g2-b4-d4-s0"  # 0.04 apart counts as a tie here
    rows = [candidate_row(1, 0.84, -120.0), candidate_row(2, 0.80, -100.0)]
    assert select(rows, wide).winner == "g2-b4-d4-s0"


def test_gates_come_before_ranking():
    slow = candidate_row(1, 0.99, -90.0, latency=25.0)  # best recall, misses the budget
    rows = [slow, candidate_row(2, 0.70, -120.0), candidate_row(4, 0.95, -80.0, "failed")]
    decision = select(rows, _policy())
    assert decision.winner == "g2-b4-d4-s0"
    table = _by_id(decision)
    assert table["g1-b4-d4-s0"]["latency_p95_b1_ms <= 10"] == "FAIL"
    assert table["g1-b4-d4-s0"]["rank"] is None and not table["g1-b4-d4-s0"]["passed_all"]
    assert table["g4-b4-d4-s0"]["status == finished"] == "FAIL"
    assert "only candidate passing every gate" in decision.why


def test_parity_gate_applies_only_when_the_column_exists():
    rows = [candidate_row(1, 0.8, -100.0), candidate_row(2, 0.9, -100.0)]
    decision = select(rows, _policy())
    assert "onnx_parity >= 1" not in decision.gates
    rows[1]["onnx_parity"] = 0.0  # exported, parity failed
    rows[0]["onnx_parity"] = 1.0
    decision = select(rows, _policy())
    assert "onnx_parity >= 1" in decision.gates
    assert decision.winner == "g1-b4-d4-s0"


def test_weighted_mode_uses_min_max_normalised_metrics():
    rows = [candidate_row(1, 0.80, -100.0), candidate_row(2, 0.90, -200.0)]
    rows.append(candidate_row(4, 0.85, -110.0))
    by_elbo = _policy(ranking={"mode": "weighted", "weights": {"recall_at_far": 0.2, "elbo": 0.8}})
    decision = select(rows, by_elbo)
    scores = {r["candidate_id"]: r["score"] for r in decision.rows}
    assert decision.winner == "g4-b4-d4-s0"
    assert scores["g1-b4-d4-s0"] == pytest.approx(0.8)
    assert scores["g2-b4-d4-s0"] == pytest.approx(0.2)
    assert scores["g4-b4-d4-s0"] == pytest.approx(0.2 * 0.5 + 0.8 * 0.9)
    assert "weighted score" in decision.why and "elbo 0.8" in decision.why
    by_recall = _policy(ranking={"mode": "weighted", "weights": {"recall_at_far": 1.0}})
    assert select(rows, by_recall).winner == "g2-b4-d4-s0"


def test_all_fail_names_the_failing_gates():
    rows = [candidate_row(1, 0.2, -100.0), candidate_row(2, 0.3, -100.0, latency=99.0)]
    decision = select(rows, _policy())
    assert decision.winner is None
    assert decision.why.startswith("no candidate passed the gates")
    assert "recall_at_far >= 0.5 failed for 2/2" in decision.why
    assert "latency_p95_b1_ms <= 10 failed for 1/2" in decision.why
    assert all(r["rank"] is None for r in decision.rows)


def test_missing_or_nan_metric_fails_its_gate():
    row = candidate_row(1, 0.9, -100.0)
    del row["latency_p95_b1_ms"]
    other = candidate_row(2, math.nan, -100.0)
    decision = select([row, other], _policy())
    assert decision.winner is None
    assert Gate(metric="x", op=">=", value=1).check({"x": None}) == (None, False)


def test_policy_is_validated_data():
    policy = SelectionPolicy.model_validate({})
    assert policy.ranking.mode == "lexicographic" and policy.ranking.tie_break == "elbo"
    assert {g.metric for g in policy.gates} >= {"status", "recall_at_far", "latency_p95_b1_ms"}
    with pytest.raises(ValidationError):
        SelectionPolicy.model_validate({"gates": [{"metric": "x", "op": "~", "value": 1}]})
    with pytest.raises(ValidationError):
        SelectionPolicy.model_validate({"ranking": {"mode": "vibes"}})


def test_write_decision_writes_csv_and_markdown(tmp_path):
    rows = [candidate_row(1, 0.80, -100.0), candidate_row(2, 0.83, -130.0)]
    decision = select(rows, _policy())
    csv_path, md_path = write_decision(decision, tmp_path)
    table = list(csv.DictReader(csv_path.open()))
    assert [r["candidate_id"] for r in table] == ["g1-b4-d4-s0", "g2-b4-d4-s0"]
    assert table[1]["rank"] == "1" and table[1]["recall_at_far"] == "0.83"
    text = md_path.read_text()
    assert decision.why in text and "| **g2-b4-d4-s0** |" in text


def _with_interval(row: dict, lo: float, hi: float, latent_dim: int = 4) -> dict:
    return {**row, "recall_at_far_lo": lo, "recall_at_far_hi": hi, "latent_dim": latent_dim}


def _evidence(recalls: dict[str, float], rho: float = 0.8, seed: int = 0, n_good: int = 2048,
              n_defect: int = 256) -> dict[str, EvalScores]:
    """Per-image scores of several candidates on one evaluation set, with the given true
    recalls at 1% false alarms (binormal, correlation rho between candidates)."""
    rng = np.random.default_rng(seed)
    shared_g, shared_d = rng.standard_normal(n_good), rng.standard_normal(n_defect)
    out = {}
    for cid, recall in recalls.items():
        good = np.sqrt(rho) * shared_g + np.sqrt(1 - rho) * rng.standard_normal(n_good)
        defect = np.sqrt(rho) * shared_d + np.sqrt(1 - rho) * rng.standard_normal(n_defect)
        out[cid] = EvalScores(good, defect + norm.ppf(0.99) + norm.ppf(recall), 0.01)
    return out


def _point(scores: EvalScores) -> float:
    return float(np.mean(scores.defect > calibrate_threshold(scores.good, 0.01).value))


def test_overlapping_intervals_are_not_a_tie_when_the_paired_difference_excludes_zero():
    """The issue's case: A ~0.2 with the better ELBO, B ~0.5; their own intervals overlap
    but B - A on the same images is clearly positive, so B wins; intervals alone said A."""
    ev = _evidence({"g1-b4-d4-s0": 0.19, "g2-b4-d4-s0": 0.48})
    a, b = (_point(ev[k]) for k in ("g1-b4-d4-s0", "g2-b4-d4-s0"))
    rows = [
        _with_interval(candidate_row(1, a, -100.0), 0.05, 0.47),
        _with_interval(candidate_row(2, b, -120.0), 0.35, 0.68),
    ]
    decision = select(rows, _policy(gates=[]), ev)
    assert decision.winner == "g2-b4-d4-s0"
    table = _by_id(decision)
    assert table["g1-b4-d4-s0"]["tied_with_winner"] is False
    assert table["g1-b4-d4-s0"]["vs_winner"].startswith("-")
    assert "paired" in decision.why and "tie-break not needed" in decision.why


def test_a_paired_tie_is_decided_by_elbo_and_tied_with_winner_says_so():
    ev = _evidence({"g1-b4-d4-s0": 0.70, "g2-b4-d4-s0": 0.70, "g5-b4-d4-s0": 0.30})
    rows = [candidate_row(g, _point(ev[f"g{g}-b4-d4-s0"]), e)
            for g, e in ((1, -120.0), (2, -100.0), (5, -50.0))]  # fmt: skip
    decision = select(rows, _policy(gates=[]), ev)
    assert decision.winner == "g2-b4-d4-s0"  # tied with g1 on recall, better ELBO
    assert "tie within noise: the paired interval holds 0" in decision.why
    table = _by_id(decision)
    assert table["g1-b4-d4-s0"]["tied_with_winner"] is True
    assert table["g5-b4-d4-s0"]["tied_with_winner"] is False  # ELBO -50 cannot buy it back
    assert table["g5-b4-d4-s0"]["rank"] == 3
    lo, hi = (float(x) for x in table["g1-b4-d4-s0"]["vs_winner"].split("[")[1][:-1].split(","))
    assert lo <= 0.0 <= hi


def test_equal_elbo_in_a_tie_goes_to_the_simpler_model():
    rows = [
        {**candidate_row(1, 0.80, -100.0), "latent_dim": 16},
        {**candidate_row(2, 0.80, -100.0), "latent_dim": 8},
    ]
    assert select(rows, _policy()).winner == "g2-b4-d4-s0"


def _renamed(rows: list[dict], ev: dict, names: dict[str, str]):
    rows = [{**r, "candidate_id": names[r["candidate_id"]]} for r in rows]
    return rows, {names[k]: v for k, v in ev.items()}


def test_winner_depends_neither_on_order_nor_on_names_nor_on_clear_losers():
    recalls = {"g1-b4-d4-s0": 0.72, "g2-b4-d4-s0": 0.70, "g5-b4-d4-s0": 0.71,
               "g10-b4-d4-s0": 0.35}  # fmt: skip
    ev = _evidence(recalls, seed=4)
    elbo = {"g1-b4-d4-s0": -110.0, "g2-b4-d4-s0": -100.0, "g5-b4-d4-s0": -100.0,
            "g10-b4-d4-s0": -10.0}  # fmt: skip
    rows = [candidate_row(int(c.split("-")[0][1:]), _point(ev[c]), elbo[c]) for c in recalls]
    base = select(rows, _policy(gates=[]), ev)
    key = (base.row(base.winner)["candidate_id"],)
    assert base.winner == "g2-b4-d4-s0"  # g2 and g5 tie on recall and ELBO: smaller granularity
    rng = np.random.default_rng(0)
    for trial in range(4):
        order = rng.permutation(len(rows))
        names = {c: f"cand-{n}" for c, n in zip(recalls, rng.permutation(100)[:4], strict=True)}
        shuffled, ev2 = _renamed([rows[i] for i in order], ev, names)
        decision = select(shuffled, _policy(gates=[]), ev2)
        assert decision.winner == names[key[0]], trial
    without_loser = [r for r in rows if r["candidate_id"] != "g10-b4-d4-s0"]
    assert select(without_loser, _policy(gates=[]), ev).winner == base.winner


def test_decision_pools_seeds_per_configuration_with_intervals():
    """2 configurations x 3 seeds: the decision table shows each configuration's mean and
    95% interval over its seeds, beside the per-candidate rows."""
    draws = [(0.0, -100.0), (0.02, -101.0), (-0.02, -99.0)]
    rows = [
        candidate_row(g, base + d, elbo, seed=s)
        for g, base in ((1, 0.60), (2, 0.80))
        for s, (d, elbo) in enumerate(draws)
    ]
    decision = select(rows, _policy())
    by_id = {c["config_id"]: c for c in decision.by_config}
    assert by_id["g2-b4-d4"]["n_seeds"] == 3
    assert by_id["g2-b4-d4"]["recall_at_far_mean"] == pytest.approx(0.80)
    lo, hi = by_id["g2-b4-d4"]["recall_at_far_ci_low"], by_id["g2-b4-d4"]["recall_at_far_ci_high"]
    assert lo < 0.80 < hi and hi - lo == pytest.approx(2 * 4.303 * 0.02 / 3**0.5, rel=1e-3)
    md = decision_markdown(decision)
    assert "Per configuration over seeds" in md and "| g2-b4-d4 | 3 |" in md


def test_default_gates_match_params_yaml_and_refuse_useless_models():
    """The in-code defaults are params.yaml's: a minimum recall and the collapse gate. A
    sweep where nothing reaches them has no winner, and says which gate failed."""
    from pathlib import Path

    import yaml

    from granvae.select import default_gates

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    written = [Gate.model_validate(g) for g in params["select"]["gates"]]
    assert [g.label for g in written] == [g.label for g in default_gates()]
    assert [g.optional for g in written] == [g.optional for g in default_gates()]
    useless = [candidate_row(1, 0.0, -90.0), candidate_row(2, 0.45, -100.0)]
    decision = select(useless, SelectionPolicy())
    assert decision.winner is None and decision.passed == []
    assert "recall_at_far >= 0.5 failed for 2/2" in decision.why
    collapsed = [{**candidate_row(1, 0.9, -90.0), "active_units": 0}]
    assert select(collapsed, SelectionPolicy()).winner is None
    assert select([{**collapsed[0], "active_units": 3}], SelectionPolicy()).winner == "g1-b4-d4-s0"
