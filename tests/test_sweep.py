"""A short real sweep (2 configurations x 3 seeds, plus a broken one): the tables, every
candidate's files, failures recorded, and the seed means and intervals in results and report.
"""

from __future__ import annotations

import html
import json
import math

import pandas as pd
import pytest
from scipy import stats

from granvae.config import SweepConfig, load_settings
from granvae.data import generate, write_dataset
from granvae.models import ModelConfig
from granvae.report import build_report
from granvae.report.intervals import interval_text
from granvae.sweep import candidate_grid, divisors, read_results_by_config, run_sweep

TINY = {
    "model": {"arch": "conv", "latent_dim": 4, "hidden": 32},
    "train": {"epochs": 1, "batch_size": 32},
    "sweep": {"granularities": [1, 2, 99], "betas": [2.0], "seeds": [0, 1, 2], "workers": 2},
    "evaluation": {
        "iwae_k": 2,
        "iwae_images": 16,
        "latency_repeats": 2,
        "disentanglement_train": 100,
        "disentanglement_test": 50,
        "factor_vae_votes": 20,
        "dci_estimators": 2,
    },
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    splits, meta = generate("surfaces", 128, 64, 64, seed=0, image_size=32)
    write_dataset(root / "data", splits, meta)
    rows = run_sweep(load_settings(None, TINY), root / "data", root / "sweep", progress=False)
    return root, rows


def test_grid_defaults_to_divisors_of_d() -> None:
    assert divisors(10) == [1, 2, 5, 10]
    grid = candidate_grid(SweepConfig(betas=[1, 4], seeds=[0, 1]), ModelConfig(latent_dim=10))
    assert len(grid) == 4 * 2 * 2
    assert grid[0].candidate_id == "g1-b1-d10-s0"


def test_sweep_writes_table_and_candidate_files(sweep) -> None:
    root, rows = sweep
    table = pd.read_csv(root / "sweep" / "results.csv")
    assert list(table["candidate_id"]) == [f"g{g}-b2-d4-s{s}" for g in (1, 2, 99) for s in range(3)]
    ok = table[table["status"] == "finished"]
    assert len(ok) == 6
    for column in (
        "elbo",
        "iwae_elbo",
        "image_auroc",
        "recall_at_far",
        "recall_crack",
        "pixel_auroc",
        "latency_p95_b1_ms",
        "mig",
        "dci_disentanglement",
        "tc",
    ):
        assert ok[column].notna().all(), column
    for cid in ok["candidate_id"]:
        cdir = root / "sweep" / "candidates" / cid
        for name in (
            "model/config.json",
            "model/model.pt",
            "checkpoint.pt",
            "evaluation.json",
            "threshold.json",
            "scores.npz",
            "status.json",
        ):
            assert (cdir / name).exists(), name
    meta = json.loads((root / "sweep" / "sweep.json").read_text())
    assert meta["data_version"].startswith("manifest:") and meta["sweep_id"]


def test_broken_candidate_is_failed_and_others_finish(sweep) -> None:
    _, rows = sweep
    bad = [r for r in rows if r["granularity"] == 99]
    assert len(bad) == 3
    for r in bad:
        assert r["status"] == "failed" and "granularity 99 exceeds latent_dim 4" in r["reason"]
    assert all(r["status"] == "finished" for r in rows if r["granularity"] != 99)


def test_g1_differs_from_g2_under_beta_above_one(sweep) -> None:
    _, rows = sweep
    by_id = {r["candidate_id"]: r for r in rows}
    g1, g2 = by_id["g1-b2-d4-s0"], by_id["g2-b2-d4-s0"]
    assert g1["tc_between"] != pytest.approx(g2["tc_between"])
    assert not math.isnan(g1["elbo"]) and g1["elbo"] < 0


def test_rerun_resumes_without_retraining(sweep) -> None:
    root, rows = sweep
    cdir = root / "sweep" / "candidates" / "g1-b2-d4-s0"
    stamp = (cdir / "evaluation.json").stat().st_mtime_ns
    again = run_sweep(load_settings(None, TINY), root / "data", root / "sweep", progress=False)
    assert (cdir / "evaluation.json").stat().st_mtime_ns == stamp
    assert again[0]["elbo"] == pytest.approx(rows[0]["elbo"])


def test_two_configurations_by_three_seeds_give_means_and_intervals(sweep) -> None:
    """results_by_config holds the seed mean and t interval; the report shows the same."""
    root, rows = sweep
    by_config = {a["config_id"]: a for a in read_results_by_config(root / "sweep")}
    assert set(by_config) == {"g1-b2-d4", "g2-b2-d4", "g99-b2-d4"}
    for g in (1, 2):
        a = by_config[f"g{g}-b2-d4"]
        elbos = [r["elbo"] for r in rows if r["granularity"] == g]
        assert a["seeds"] == [0, 1, 2] and a["n_failed"] == 0
        assert a["elbo_mean"] == pytest.approx(sum(elbos) / 3)
        half = stats.t.ppf(0.975, 2) * stats.tstd(elbos) / math.sqrt(3)
        assert (a["elbo_ci_low"], a["elbo_ci_high"]) == pytest.approx(
            (a["elbo_mean"] - half, a["elbo_mean"] + half)
        )
        assert a["elbo_ci_low"] < a["elbo_ci_high"]  # three seeds, three different ELBOs
    assert by_config["g99-b2-d4"]["n_seeds"] == 0 and by_config["g99-b2-d4"]["n_failed"] == 3
    csv = pd.read_csv(root / "sweep" / "results_by_config.csv").set_index("config_id")
    assert csv.loc["g1-b2-d4", "seeds"] == "0;1;2"
    # The report (pictures skipped: no data set) carries the same intervals and the paired test.
    page = build_report(root / "sweep", data_dir=root / "no-data").read_text()
    assert "Mean and 95% interval per configuration" in page
    a = by_config["g2-b2-d4"]
    text = interval_text(a["elbo_mean"], a["elbo_ci_low"], a["elbo_ci_high"])
    assert html.escape(text) in page
    assert "each g minus g=1, same seeds" in page
    assert "no V to show" in page and "The intervals show a V" not in page  # one capacity
