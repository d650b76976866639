"""Promotion on equal terms: champion and challenger scored on the challenger's images.

Real tiny models (32x32 parts, one candidate, two epochs) registered through the
session's real `mlflow server`. A retrain on newly landed images with a Bernoulli decoder
makes a challenger that scores near chance on grey parts: plain `promote` must refuse it with both
figures measured on the same images; `--force` (with a reason) promotes it and records who,
when, why and what was overridden; a good retrain on newer images is then promoted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from sweep_fixtures import fast_store, unique
from typer.testing import CliRunner

from granvae.cli_tracking import add_commands
from granvae.config import load_settings
from granvae.data import generate, write_dataset
from granvae.select import SelectionPolicy, load_rows, select, write_decision
from granvae.sweep import run_sweep
from granvae.tracking import PromotionRefused, champion_check, history, promote, register_winner
from granvae.tracking.registry import aliases

pytestmark = pytest.mark.slow
GATES = {"gates": [{"metric": "status", "op": "==", "value": "finished"}]}


def _data(root: Path, seed: int) -> Path:
    """Plain grey parts (a little sensor noise) whose defects are checkered marks: a batch
    of images as it lands on the line, a new data version per seed. A Gaussian decoder's
    reconstruction error sees the marks at once; a Bernoulli decoder's cannot, because its
    log-likelihood is linear in the pixel values and the marks keep the local mean grey
    (the failure of the old built-in Bernoulli default on grey parts)."""
    splits, meta = generate("surfaces", 256, 160, 160, seed, image_size=32)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    checker = np.where((yy + xx) % 2 == 0, 255, 0).astype(np.uint8)
    for split in splits.values():
        noise = rng.normal(128, 3, split.images.shape).clip(0, 255).astype(np.uint8)
        marks = split.masks[:, None].astype(bool) & (split.labels != 0)[:, None, None, None]
        split.images[:] = np.where(marks, checker, noise)
    write_dataset(root / f"data-{seed}", splits, meta)
    return root / f"data-{seed}"


def _register(root: Path, store, name: str, seed: int, likelihood: str) -> int:
    settings = load_settings(
        None,
        {
            "model": {"latent_dim": 4, "hidden": 32, "likelihood": likelihood},
            "sweep": {"granularities": [2], "betas": [1.0], "seeds": [0]},
            "train": {"epochs": 2, "batch_size": 32},
            "evaluation": {"score": "recon", "iwae_k": 2, "iwae_images": 8,
                           "latency_repeats": 1, "disentanglement": False,
                           # the summed rule is what makes the bernoulli retrain worse
                           "score_alternatives": []},
        },  # fmt: skip
    )
    sweep = root / f"sweep-{seed}"
    run_sweep(settings, _data(root, seed), sweep, progress=False, workers=1)
    decision = select(load_rows(sweep), SelectionPolicy.model_validate(GATES))
    write_decision(decision, sweep)
    return register_winner(sweep, decision, name, store=store, experiment=name)


def test_worse_challenger_refused_on_same_images_forced_and_better_promoted(
    mlflow_server, tmp_path, monkeypatch
):
    store, name = fast_store(mlflow_server, tmp_path), unique("equal")
    v1 = _register(tmp_path, store, name, seed=0, likelihood="gaussian")
    promote(name, store=store, user="alice", reason="first model")
    v2 = _register(tmp_path, store, name, seed=1, likelihood="bernoulli")  # the bad retrain
    data_v2 = store.client.get_model_version(name, str(v2)).tags["data_version"]
    assert data_v2 != store.client.get_model_version(name, str(v1)).tags["data_version"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"select": GATES}))
    app = typer.Typer()
    add_commands(app)
    out = CliRunner().invoke(app, ["promote", "--model-name", name])
    text = " ".join(out.output.split())
    assert out.exit_code == 2, out.output
    assert f"version {v2} is not shown to be within the margin of champion version {v1}" in text
    assert "REFUSED: may be worse by more than the margin" in text
    assert f"on the same images (data version {data_v2}: 160 good" in text
    assert f"challenger v{v2} recall_at_far" in text and f"champion v{v1} recall_at_far" in text
    assert "Traceback" not in out.output
    assert aliases(store, name)["champion"] == v1

    with pytest.raises(PromotionRefused, match="--force needs --reason"):
        promote(name, force=True, store=store, user="bob")
    forced = promote(name, force=True, store=store, user="bob", reason="line trial")
    assert forced.forced and forced.note.startswith("forced over: version")
    cmp = forced.comparison
    assert cmp["champion"]["recall_at_far"] > cmp["challenger"]["recall_at_far"]
    assert cmp["high"] < 0 and cmp["n_good"] == 160
    last = history(name, store=store)[-1]
    assert (last["by"], last["reason"], last["forced"]) == ("bob", "line trial", True)
    assert last["comparison"]["data_version"] == data_v2
    tags = store.client.get_model_version(name, str(v2)).tags
    assert (
        tags["granvae.promotion_forced"] == "True"
        and "within the margin" in tags["granvae.promotion_check"]
    )

    v3 = _register(tmp_path, store, name, seed=2, likelihood="gaussian")
    better = promote(name, store=store, user="carol", reason="retrained")
    assert better.to_version == v3 and not better.forced
    assert better.comparison["challenger"]["version"] == v3
    assert better.comparison["champion"]["version"] == v2
    assert better.comparison["difference"] > 0
    assert champion_check(name, store=store) == (
        f"champion version {v3}: moved by granvae; gates passed"
    )
    store.client.set_registered_model_alias(name, "champion", str(v2))  # a person, in the UI
    assert "MOVED OUTSIDE granvae" in champion_check(name, store=store)
