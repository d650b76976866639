"""Fast checks of the flow's plumbing: config and profiles, overrides, cache keys, the
schedule's deployment, the CLI mount, and git/DVC versioning on a real local repo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
import yaml
from typer.testing import CliRunner

from granvae.config import SettingsError
from granvae.sweep import Candidate
from pipelines.cli import build_overrides, parse_sets
from pipelines.config import load_run_config
from pipelines.runners import cuda_device, local_workers, make_runner
from pipelines.sweepdir import code_version, sweep_key
from pipelines.tasks import candidate_cache_key

ROOT = Path(__file__).resolve().parents[1]


def test_profiles_merge_over_params_and_overrides_win() -> None:
    quick = yaml.safe_load((ROOT / "params.yaml").read_text())["profiles"]["quick"]
    run = load_run_config(ROOT / "params.yaml", "quick", {"train": {"epochs": 1}})
    assert run.settings.data.n_train == quick["data"]["n_train"]  # the profile applied
    assert run.settings.train.epochs == 1  # the override beats the profile
    assert run.pipeline.snapshot == "data/snapshot" and run.profile == "quick"
    full = load_run_config(ROOT / "params.yaml", "full")
    assert full.settings.train.epochs == load_run_config(ROOT / "params.yaml").settings.train.epochs
    assert run.digest() != full.digest()
    with pytest.raises(SettingsError, match="no profile 'huge'"):
        load_run_config(ROOT / "params.yaml", "huge")


def test_quick_profile_is_small_enough_for_a_laptop() -> None:
    quick = load_run_config(ROOT / "params.yaml", "quick").settings
    from granvae.sweep import candidate_grid

    assert 2 <= len(candidate_grid(quick.sweep, quick.model)) <= 4
    assert quick.data.n_train <= 1024 and quick.train.epochs <= 40  # measured: < 7 min


def test_cli_flags_become_overrides() -> None:
    assert parse_sets(["train.epochs=2", "sweep.betas=[1, 4]", "pipeline.dask=local"]) == {
        "train": {"epochs": 2},
        "sweep": {"betas": [1, 4]},
        "pipeline": {"dask": "local"},
    }
    got = build_overrides(landing="/in", dask_address="tcp://s:8786", sets=["train.epochs=1"])
    assert got == {"pipeline": {"landing": "/in", "dask": "tcp://s:8786"}, "train": {"epochs": 1}}
    with pytest.raises(ValueError, match="key.path=value"):
        parse_sets(["epochs"])


def test_cache_key_ignores_the_run_and_tracks_data_params_code() -> None:
    cand = Candidate("beta_stcvae", 2, 4.0, 10, 0)
    params = {"candidate": cand, "data_version": "abc:123", "settings_digest": "s1",
              "code_version": code_version(), "sweep_dir": "/a", "index": 0}  # fmt: skip
    key = candidate_cache_key(SimpleNamespace(), params)
    assert key == candidate_cache_key(SimpleNamespace(), {**params, "sweep_dir": "/b"})
    for change in ({"data_version": "def:456"}, {"settings_digest": "s2"}, {"code_version": "x"}):
        assert candidate_cache_key(SimpleNamespace(), {**params, **change}) != key
    other = {**params, "candidate": Candidate("beta_stcvae", 5, 4.0, 10, 0)}
    assert candidate_cache_key(SimpleNamespace(), other) != key
    assert sweep_key("0123456789abcdef", "s1", "c") == sweep_key("0123456789abcdef", "s1", "c")


def test_runner_is_configuration() -> None:
    from prefect.task_runners import ProcessPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    run = load_run_config(ROOT / "params.yaml", "quick")
    assert isinstance(make_runner(run.pipeline, 4), ProcessPoolTaskRunner)
    assert local_workers(run.pipeline.model_copy(update={"max_workers": 8}), 3) == 3
    dask = make_runner(run.pipeline.model_copy(update={"dask": "tcp://10.0.0.1:8786"}), 4)
    assert isinstance(dask, DaskTaskRunner) and dask.address == "tcp://10.0.0.1:8786"
    local = make_runner(run.pipeline.model_copy(update={"dask": "local"}), 4)
    assert local.cluster_kwargs["n_workers"] == 2
    assert [cuda_device(i, 2) for i in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert cuda_device(0, 0) is None


def test_schedule_serves_the_flow_on_cron() -> None:
    from pipelines.schedule import deployment

    dep = deployment("0 2 * * *", "params.yaml", "quick", {"train": {"epochs": 1}})
    assert [s.schedule.cron for s in dep.schedules] == ["0 2 * * *"]
    assert dep.parameters["profile"] == "quick"
    assert dep.entrypoint == "pipelines.schedule.scheduled_retrain"


def test_cli_mounts_retrain_and_schedule() -> None:
    from granvae.cli_pipeline import add_commands

    app = typer.Typer()
    add_commands(app)
    for command in ("retrain", "schedule"):
        out = CliRunner().invoke(app, [command, "--help"])
        assert out.exit_code == 0, out.output
    assert "--dask-address" in CliRunner().invoke(app, ["retrain", "--help"]).output
    assert "--cron" in CliRunner().invoke(app, ["schedule", "--help"]).output


def test_granvae_package_never_imports_prefect() -> None:
    code = (
        "import sys, granvae.cli_pipeline, granvae.sweep, granvae.config; "
        "assert 'prefect' not in sys.modules and 'dvc' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_versioning_is_idempotent_on_a_real_repo(tmp_path) -> None:
    from granvae.data import generate, write_dataset
    from pipelines import versioning

    splits, meta = generate("shapes", 16, 4, 4, 0, image_size=16)
    write_dataset(tmp_path / "staging", splits, meta)
    repo = tmp_path / "repo"
    first = versioning.version_snapshot(tmp_path / "staging", repo, "data/snapshot", None)
    again = versioning.version_snapshot(tmp_path / "staging", repo, "data/snapshot", None)
    assert again.data_version == first.data_version  # same bytes: no new commit, same id
    log = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True)
    assert log.stdout.splitlines() == [f"data: snapshot {first.md5}", "dvc: init data repository"]
    assert Path(versioning.remote_url(repo, "data/snapshot")).exists()
    assert yaml.safe_load((repo / "data/snapshot.dvc").read_text())["outs"][0]["md5"].startswith(
        first.md5
    )


def test_only_transient_failures_are_retried() -> None:
    from prefect.states import Completed, Failed

    from granvae.data import DataValidationError
    from granvae.tracking import TrackingUnavailable
    from pipelines.tasks import _transient
    from pipelines.versioning import VersioningError

    down = TrackingUnavailable("http://mlflow:5000", "create run", 4, ConnectionError("refused"))
    for err in (down, VersioningError("dvc push failed"), ConnectionError("reset")):
        assert _transient(None, None, Failed(data=err)), err
    bad_data = DataValidationError([("train/good/0003.png", "truncated")])
    assert not _transient(None, None, Failed(data=bad_data))
    assert not _transient(None, None, Failed(data=ValueError("bad config")))
    assert not _transient(None, None, Completed(data=1))
