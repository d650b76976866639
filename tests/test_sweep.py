"""A short real sweep: the table, every candidate's files, a broken candidate recorded as failed."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from granvae.config import SweepConfig, load_settings
from granvae.data import generate, write_dataset
from granvae.models import ModelConfig
from granvae.sweep import candidate_grid, divisors, run_sweep

TINY = {
    "model": {"arch": "conv", "latent_dim": 4, "hidden": 32},
    "train": {"epochs": 1, "batch_size": 32},
    "sweep": {"granularities": [1, 2, 99], "betas": [2.0], "workers": 2},
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
    assert list(table["candidate_id"]) == ["g1-b2-d4-s0", "g2-b2-d4-s0", "g99-b2-d4-s0"]
    ok = table[table["status"] == "finished"]
    assert len(ok) == 2
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
    bad = next(r for r in rows if r["candidate_id"] == "g99-b2-d4-s0")
    assert bad["status"] == "failed" and "granularity 99 exceeds latent_dim 4" in bad["reason"]
    assert all(r["status"] == "finished" for r in rows if r is not bad)


def test_g1_differs_from_g2_under_beta_above_one(sweep) -> None:
    _, rows = sweep
    g1, g2 = rows[0], rows[1]
    assert g1["tc_between"] != pytest.approx(g2["tc_between"])
    assert not math.isnan(g1["elbo"]) and g1["elbo"] < 0


def test_rerun_resumes_without_retraining(sweep) -> None:
    root, rows = sweep
    cdir = root / "sweep" / "candidates" / "g1-b2-d4-s0"
    stamp = (cdir / "evaluation.json").stat().st_mtime_ns
    again = run_sweep(load_settings(None, TINY), root / "data", root / "sweep", progress=False)
    assert (cdir / "evaluation.json").stat().st_mtime_ns == stamp
    assert again[0]["elbo"] == pytest.approx(rows[0]["elbo"])
