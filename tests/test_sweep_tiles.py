"""Tile size is a sweep dimension beside granularity: a swept tile size trains on tiles,
scores with evaluation.tile_score (a density of the tile) and ships its coreset, and its
row stands beside the whole-image candidate's for the selection policy."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from granvae.config import SettingsError, SweepConfig, load_settings
from granvae.data import generate, write_dataset
from granvae.models import ModelConfig
from granvae.scoring.density import DensityStats
from granvae.sweep import candidate_grid, read_results_by_config, run_sweep

TINY = {
    "model": {"arch": "conv", "latent_dim": 4, "hidden": 32},
    "train": {"epochs": 1, "batch_size": 32},
    "sweep": {"granularities": [2], "betas": [1.0], "seeds": [0], "workers": 1,
              "tiles": [None, 16]},
    "evaluation": {"iwae_k": 2, "iwae_images": 16, "latency_repeats": 2,
                   "disentanglement": False, "tile_score": "tile_fusion",
                   "score_alternatives": []},  # the whole-image row keeps `score`
    "tiling": {"tiles_per_image": 2},
}  # fmt: skip


def test_the_grid_crosses_tile_sizes_with_granularities() -> None:
    grid = candidate_grid(SweepConfig(granularities=[1, 2], betas=[1], tiles=[None, 16, 32]),
                          ModelConfig(latent_dim=4))  # fmt: skip
    ids = [c.candidate_id for c in grid]
    assert ids == ["g1-b1-d4-s0", "g2-b1-d4-s0", "g1-b1-d4-t16-s0", "g2-b1-d4-t16-s0",
                   "g1-b1-d4-t32-s0", "g2-b1-d4-t32-s0"]  # fmt: skip


def test_a_tile_that_no_model_can_take_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="sweep.tiles"):
        load_settings(None, {"sweep": {"tiles": [None, 24]}})


def test_a_swept_tile_trains_on_tiles_and_scores_their_density(tmp_path) -> None:
    splits, meta = generate("surfaces", 64, 32, 32, seed=0, image_size=32)
    write_dataset(tmp_path / "data", splits, meta)
    rows = run_sweep(load_settings(None, TINY), tmp_path / "data", tmp_path / "sweep",
                     progress=False)  # fmt: skip
    by_id = {r["candidate_id"]: r for r in rows}
    assert set(by_id) == {"g2-b1-d4-s0", "g2-b1-d4-t16-s0"}
    assert all(r["status"] == "finished" for r in rows), [r.get("reason") for r in rows]
    assert (by_id["g2-b1-d4-s0"]["tile"], by_id["g2-b1-d4-t16-s0"]["tile"]) == (0, 16)
    cdir = tmp_path / "sweep" / "candidates" / "g2-b1-d4-t16-s0"
    scoring = json.loads((cdir / "scoring.json").read_text())
    assert (scoring["rule"], scoring["tile"], scoring["stride"]) == ("tile_fusion", 16, 4)
    assert json.loads((cdir / "model" / "config.json").read_text())["image_size"] == 16
    assert DensityStats.load(cdir).coreset.shape[1] == 4
    whole = json.loads((tmp_path / "sweep" / "candidates" / "g2-b1-d4-s0" / "scoring.json")
                       .read_text())  # fmt: skip
    assert whole["rule"] == "l2_max" and whole["tile"] is None
    table = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert sorted(table["tile"]) == [0, 16]
    configs = {a["config_id"]: a for a in read_results_by_config(tmp_path / "sweep")}
    assert set(configs) == {"g2-b1-d4", "g2-b1-d4-t16"}
    assert all(0.0 <= a["recall_at_far_mean"] <= 1.0 for a in configs.values())
