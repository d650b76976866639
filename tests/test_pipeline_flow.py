"""The retrain flow end to end on tiny data, against real Prefect, MLflow, git and DVC.

One module-scoped world keeps the suite short: a first retrain (generator), a refused
landing folder (truncated PNG), a second retrain on newly landed images, and the same
sweep again on a Dask LocalCluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from uuid import UUID

import pytest
import yaml
from pipeline_fixtures import (
    aliases,
    dvc,
    git,
    landing_folder,
    tiny_params,
    tree_state,
    truncate_png,
    versions,
    write_params,
)

from pipelines import versioning
from pipelines.bundle import verify_bundle
from pipelines.flow import run_retrain, run_sweep_only

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory, mlflow_server, prefect_harness):
    root = tmp_path_factory.mktemp("retrain")
    params = tiny_params(root, mlflow_server)
    # params beside the data repository, as in a code project: the flow creates the repo and
    # commits its own dvc.yaml + resolved params.yaml there (what `dvc metrics diff` reads)
    params_path = str(write_params(root / "code" / "params.yaml", params))
    project = Path(params["pipeline"]["data_repo"])
    first = run_retrain(params_path)
    return SimpleNamespace(root=root, params=params, project=project, path=params_path, first=first)


@pytest.fixture(scope="module")
def second(world):
    """New images land; v1 was promoted to champion by a person beforehand."""
    from granvae.tracking import Store, TrackingSettings, promote

    cfg = TrackingSettings(**world.params["tracking"])
    promote(cfg.model_name, world.first["version"], store=Store(cfg), user="test")
    landing = landing_folder(world.root, seed=1)
    return run_retrain(world.path, overrides={"pipeline": {"landing": str(landing)}})


def _artifacts(flow_run_id: str) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    wanted = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=wanted)
    return {a.key: a for a in found}


def test_first_retrain_registers_one_traceable_version(world) -> None:
    summary, project = world.first, world.project
    listed = versions(world.params)
    assert [v["version"] for v in listed] == [summary["version"]] == [1]
    assert listed[0]["status"] == "complete"
    sha = git(project, "log", "-n1", "--format=%h", "--abbrev=10", "--", "data/snapshot.dvc")
    md5 = versioning.tracked_md5(project, "data/snapshot", rev="HEAD")
    assert summary["data_version"] == f"{sha}:{md5}" == listed[0]["data_version"]
    assert aliases(world.params)["challenger"] == 1
    assert Path(versioning.remote_url(project, "data/snapshot")).exists()  # pushed
    assert set(summary["candidates"].values()) == {"finished"}
    assert set(summary["metrics"]) >= {"recall_at_far", "image_auroc", "elbo"}
    assert summary["trigger"] == "manual" == _version_tags(world.params, 1)["granvae.trigger"]


def _version_tags(params: dict, version: int) -> dict[str, str]:
    from granvae.tracking import Store, TrackingSettings

    cfg = TrackingSettings(**params["tracking"])
    return Store(cfg).client.get_model_version(cfg.model_name, str(version)).tags


def test_first_retrain_ships_a_verified_bundle(world) -> None:
    bundle = Path(world.first["bundle"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["data_version"] == world.first["data_version"]
    assert manifest["candidate"]["granularity"] in (1, 2)
    assert verify_bundle(bundle).startswith("OK")


def test_first_retrain_publishes_leaderboard_and_summary(world) -> None:
    found = _artifacts(world.first["flow_run_id"])
    assert {"sweep-leaderboard", "retrain-summary"} <= set(found)
    table = found["sweep-leaderboard"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert sorted(r["candidate_id"] for r in table) == sorted(world.first["candidates"])
    markdown = found["retrain-summary"].data
    assert f"versions/{world.first['version']}" in markdown
    assert world.first["run_id"] in markdown




def _assert_data_repo_settled(project: Path) -> None:
    """What a user checks after a retrain: nothing to reproduce, nothing unpushed, the lock
    and the git-tracked outputs committed."""
    assert dvc(project, "status").strip() == "Data and pipelines are up to date."
    assert dvc(project, "status", "-c", "-r", "storage").strip() == (
        "Cache and remote 'storage' are in sync."
    )
    assert git(project, "status", "--porcelain") == ""  # everything committed
    assert git(project, "ls-files", "dvc.lock", "runs/dvc/metrics.json").split() == [
        "dvc.lock",
        "runs/dvc/metrics.json",
    ]


def test_first_retrain_leaves_the_data_repo_locked_and_clean(world) -> None:
    _assert_data_repo_settled(world.project)
    lock = yaml.safe_load((world.project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare", "sweep", "evaluate", "select", "export"}
    winner = json.loads((world.project / "runs/dvc/decision/winner.json").read_text())
    assert winner["winner"] == world.first["winner"]
    bundle = world.project / "runs/dvc/bundle/manifest.json"
    assert json.loads(bundle.read_text())["data_version"] == world.first["data_version"]


def test_truncated_png_fails_before_training(world) -> None:
    landing = landing_folder(world.root, seed=2)
    bad = sorted((landing / "train" / "good").glob("*.png"))[3]
    truncate_png(bad)
    remote = versioning.default_remote(world.project)
    before = (tree_state(remote), git(world.project, "rev-parse", "HEAD"), versions(world.params))
    sweeps = tree_state(Path(world.params["pipeline"]["work_dir"]) / "sweeps")
    with pytest.raises(Exception, match=bad.name) as info:
        run_retrain(world.path, overrides={"pipeline": {"landing": str(landing)}})
    assert "validation failed" in str(info.value)
    after = (tree_state(remote), git(world.project, "rev-parse", "HEAD"), versions(world.params))
    assert after == before  # remote, git history and registry untouched
    assert tree_state(Path(world.params["pipeline"]["work_dir"]) / "sweeps") == sweeps


def test_second_retrain_new_data_new_challenger_same_champion(world, second) -> None:
    assert second["data_version"] != world.first["data_version"]
    assert second["version"] == 2
    assert aliases(world.params) == {"champion": 1, "challenger": 2}
    assert [v["data_version"] for v in versions(world.params)] == [
        second["data_version"],
        world.first["data_version"],
    ]
    log = git(world.project, "log", "--format=%s", "--", "data/snapshot.dvc").splitlines()
    assert len(log) == 2 and all(line.startswith("data: snapshot") for line in log)


def _candidate_metrics(summary: dict) -> dict[str, float]:
    """'candidates.<id>.<metric>' -> value, from the sweep the retrain registered from."""
    rows = json.loads((Path(summary["sweep_dir"]) / "results.json").read_text())
    return {
        f"candidates.{r['candidate_id']}.{k}": r[k]
        for r in rows
        for k in ("elbo", "recall_at_far", "image_auroc")
    }


def test_dvc_metrics_diff_compares_the_two_retrains(world, second) -> None:
    _assert_data_repo_settled(world.project)
    log = git(world.project, "log", "--format=%h %s", "--grep=^retrain: ").splitlines()
    assert [line.split()[4] for line in log] == ["2", "1"]  # "retrain: NAME version N on md5"
    new, old = (line.split()[0] for line in log)
    diff = json.loads(dvc(world.project, "metrics", "diff", "--all", "--json", old, new))
    diff = diff["runs/dvc/metrics.json"]
    before, after = _candidate_metrics(world.first), _candidate_metrics(second)
    for key in before:
        assert diff[key]["old"] == pytest.approx(before[key]), key
        assert diff[key]["new"] == pytest.approx(after[key]), key
    assert any(before[k] != after[k] for k in before)  # new data, new numbers
    # right after the retrain, HEAD~1 (its params commit) still holds the previous metrics
    last = json.loads(dvc(world.project, "metrics", "diff", "--all", "--json", "HEAD~1"))
    assert last["runs/dvc/metrics.json"] == diff


def test_second_challenger_is_compared_with_the_champion_on_its_own_images(
    world, second
) -> None:
    """Both registered ONNX bundles scored on v2's evaluation images, with the rule the
    evaluation used: v2's own figure there is the one it was registered with."""
    from granvae.tracking import Store, TrackingSettings
    from granvae.tracking.compare import compare

    cfg = TrackingSettings(**world.params["tracking"])
    store = Store(cfg)
    v1, v2 = (store.client.get_model_version(cfg.model_name, str(v)) for v in (1, 2))
    result = compare(store, v2, v1)
    assert result.data_version == second["data_version"] != v1.tags["data_version"]
    assert result.n_good > 0 and result.n_defect > 0
    assert (result.challenger.version, result.champion.version) == (2, 1)
    registered = second["metrics"]["recall_at_far"]
    assert result.challenger.recall_at_far == pytest.approx(registered, abs=1.5 / result.n_defect)
    assert result.low <= result.difference <= result.high


def test_versions_record_code_and_resolved_params(world) -> None:
    import yaml
    from mlflow import MlflowClient

    from granvae.tracking.provenance import code_tags

    listed = versions(world.params)[-1]
    assert listed["git_commit"] == code_tags()["granvae.code_commit"]
    assert listed["code_dirty"] in ("true", "false")
    client = MlflowClient(world.params["tracking"]["uri"])
    path = client.download_artifacts(
        listed["run_id"], "provenance/params.resolved.yaml", str(world.root / "prov")
    )
    resolved = yaml.safe_load(Path(path).read_text())
    assert resolved["sweep"]["granularities"] == world.params["sweep"]["granularities"]
    assert resolved["pipeline"]["work_dir"] == world.params["pipeline"]["work_dir"]


def test_dask_local_cluster_gives_the_same_leaderboard(world, second) -> None:
    local = json.loads((Path(second["sweep_dir"]) / "results.json").read_text())
    snapshot = str(world.project / "data" / "snapshot")
    rows = run_sweep_only(
        snapshot,
        str(world.root / "sweep-dask"),
        second["data_version"],
        params=world.path,
        overrides={"pipeline": {"dask": "local", "dask_workers": 2}},
    )
    assert [r["candidate_id"] for r in rows] == [r["candidate_id"] for r in local]
    for mine, ref in zip(rows, local, strict=True):
        assert mine["status"] == ref["status"] == "finished"
        for key in ("elbo", "recon", "kl", "image_auroc", "recall_at_far", "threshold"):
            assert mine[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-4), key


def test_every_candidate_run_carries_its_pictures(world) -> None:
    """People decide in the MLflow UI: each child run has its plots, the parent the V."""
    from mlflow import MlflowClient

    client = MlflowClient(world.params["tracking"]["uri"])
    winner = client.get_run(world.first["run_id"])
    plots = {a.path for a in client.list_artifacts(winner.info.run_id, "plots")}
    assert {"plots/traversals.png", "plots/reconstructions.png"} <= plots
    parent = client.get_run(winner.data.tags["granvae.sweep_run_id"])
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/elbo_vs_granularity.png" in names


def test_candidate_runs_were_logged_live_while_training(world) -> None:
    """The winner's run opened when its training began and ended with it (long before the
    registration opened the sweep run), with one point per epoch, none repeated."""
    from mlflow import MlflowClient

    client = MlflowClient(world.params["tracking"]["uri"])
    winner = client.get_run(world.first["run_id"])
    sweep_run = client.get_run(winner.data.tags["granvae.sweep_run_id"])
    assert winner.info.start_time < winner.info.end_time <= sweep_run.info.start_time
    assert winner.info.status == "FINISHED" and "mlflow.parentRunId" not in winner.data.tags
    epochs = int(winner.data.tags["granvae.logged_epoch"])
    steps = [m.step for m in client.get_metric_history(winner.info.run_id, "train/elbo")]
    assert sorted(steps) == list(range(1, epochs + 1))
