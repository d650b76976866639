"""Seed aggregation and paired comparisons on hand-made result rows (pure functions)."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from granvae.metrics.seeds import (
    aggregate_rows,
    config_id,
    mean_interval,
    paired_differences,
    tied_with_best,
)


def _row(g: int, seed: int, elbo: float, status: str = "finished", beta: float = 4.0) -> dict:
    return {"candidate_id": f"g{g}-b{beta:g}-d4-s{seed}", "objective": "beta_stcvae",
            "granularity": g, "beta": beta, "latent_dim": 4, "seed": seed, "status": status,
            "reason": None, "elbo": elbo if status == "finished" else math.nan,
            "epochs": 3, "device": "cpu"}  # fmt: skip


def test_mean_interval_is_the_student_t_interval() -> None:
    s = mean_interval([1.0, 2.0, 6.0])
    half = stats.t.ppf(0.975, 2) * stats.tstd([1.0, 2.0, 6.0]) / math.sqrt(3)
    assert s["mean"] == pytest.approx(3.0) and s["n"] == 3
    assert (s["low"], s["high"]) == pytest.approx((3.0 - half, 3.0 + half))
    one = mean_interval([5.0, math.nan])
    assert one["mean"] == 5.0 and one["n"] == 1 and math.isnan(one["low"])
    assert math.isnan(mean_interval([])["mean"])


def test_aggregate_rows_one_row_per_configuration_without_failed_seeds() -> None:
    rows = [_row(1, s, e) for s, e in enumerate([-100.0, -102.0, -104.0])]
    rows += [_row(2, 0, -90.0), _row(2, 1, -91.0), _row(2, 2, 0.0, status="failed")]
    agg = {a["config_id"]: a for a in aggregate_rows(rows)}
    assert set(agg) == {"g1-b4-d4", "g2-b4-d4"}
    g1, g2 = agg["g1-b4-d4"], agg["g2-b4-d4"]
    assert g1["seeds"] == [0, 1, 2] and g1["n_seeds"] == 3 and g1["n_failed"] == 0
    assert g1["elbo_mean"] == pytest.approx(-102.0)
    assert g1["elbo_ci_low"] < -102.0 < g1["elbo_ci_high"]
    assert g2["seeds"] == [0, 1] and g2["n_failed"] == 1 and g2["elbo_n"] == 2
    assert g2["elbo_mean"] == pytest.approx(-90.5)  # the failed seed's 0.0 is not averaged
    assert "epochs_mean" not in g1 and "seed_mean" not in g1
    assert config_id({"candidate_id": "vae-g4-b1-d4-s12"}) == "vae-g4-b1-d4"


def test_paired_differences_use_only_shared_seeds_and_remove_seed_noise() -> None:
    # Seeds differ a lot (seed 2 is 30 nats worse everywhere); g=2 is 1 nat better on each seed.
    base = {0: -100.0, 1: -110.0, 2: -130.0}
    rows = [_row(1, s, e) for s, e in base.items()]
    rows += [_row(2, s, e + 1.0 + 0.1 * s) for s, e in base.items()]
    rows += [_row(4, s, e + d) for (s, e), d in zip(base.items(), [2.0, -2.5, 0.5], strict=True)]
    rows += [_row(8, 0, -95.0)]  # one seed: higher than every g on seed 0, but nothing is shown
    diffs = {d["granularity"]: d for d in paired_differences(rows, "elbo", reference=1)}
    assert diffs[2]["seeds"] == [0, 1, 2] and diffs[2]["differs"]
    assert diffs[2]["mean_diff"] == pytest.approx(1.1)
    assert diffs[2]["p_value"] < 0.01
    unpaired = mean_interval([-99.0, -108.9, -128.8])
    assert unpaired["low"] < mean_interval(base.values())["mean"]  # unpaired intervals overlap
    assert diffs[4]["n"] == 3 and not diffs[4]["differs"]  # noisy: the interval spans 0
    assert diffs[8]["seeds"] == [0] and not diffs[8]["differs"] and math.isnan(diffs[8]["ci_low"])
    ties = tied_with_best([r for r in rows if r["granularity"] != 8])
    (cap,) = ties
    assert ties[cap] == {"best": 2, "tied": [2, 4]}  # g=1 is worse on every seed, g=4 is noise
    # A one-seed g ranks on the shared seed only, and with one pair nothing is ruled out.
    assert tied_with_best(rows)[cap] == {"best": 8, "tied": [1, 2, 4, 8]}
