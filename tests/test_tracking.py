"""Logging sweeps against a real `mlflow server`: runs, params, metrics, reruns, failures."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port
from mlflow.exceptions import MlflowException
from sweep_fixtures import DATA_VERSION, fast_store, make_sweep, snapshot, unique

from granvae.select import load_rows, select, write_decision
from granvae.tracking import (
    Store,
    TrackingSettings,
    TrackingUnavailable,
    list_versions,
    log_sweep,
    register_winner,
    ui_command,
)
from granvae.tracking.registry import COMPLETE, aliases, versions
from granvae.tracking.runs import find_runs
from granvae.tracking.store import embedded_uri, is_transient, resolve_uri


def _runs(store, logged):
    client = store.client
    parent = client.get_run(logged["parent_run_id"])
    children = {cid: client.get_run(rid) for cid, rid in logged["children"].items()}
    return parent, children


def test_tracking_uri_defaults_to_the_embedded_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(TrackingSettings(workdir=tmp_path)) == embedded_uri(tmp_path)
    assert embedded_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_uri(TrackingSettings(workdir=tmp_path)) == "http://tracking.example:5000"
    assert resolve_uri(TrackingSettings(uri="http://other:1")) == "http://other:1"


def test_only_transient_errors_are_retried(tmp_path):
    store = fast_store("http://127.0.0.1:1", tmp_path, attempts=3)
    calls = []

    def missing():
        calls.append(1)
        raise MlflowException("no such model", error_code="RESOURCE_DOES_NOT_EXIST")

    with pytest.raises(MlflowException):
        store.call("get", missing)
    assert len(calls) == 1
    refused = MlflowException("API request to x failed with exception Connection refused")
    assert is_transient(refused) and is_transient(ConnectionError("reset"))


def test_sweep_logs_parent_and_children_with_params_and_metrics(mlflow_server, tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    store = fast_store(mlflow_server, tmp_path)
    logged = log_sweep(sweep, unique("exp"), store=store)
    parent, children = _runs(store, logged)
    assert parent.data.tags["granvae.sweep_id"] == "sweep-test-1"
    assert set(children) == {"g1-b4-d4-s0", "g2-b4-d4-s0", "g4-b4-d4-s0"}
    win = children["g2-b4-d4-s0"]
    assert win.data.tags["granvae.sweep_run_id"] == parent.info.run_id
    assert "mlflow.parentRunId" not in win.data.tags  # top-level: the experiment opens on it
    assert win.data.params["granularity"] == "2" and win.data.params["beta"] == "4.0"
    assert win.data.params["data_version"] == DATA_VERSION
    assert {"objective", "alpha", "gamma", "latent_dim", "seed", "estimator"} <= set(
        win.data.params
    )
    assert win.data.metrics["recall_at_far"] == pytest.approx(0.83)
    assert win.data.metrics["latency_p95_b1_ms"] == pytest.approx(1.5)
    history = store.client.get_metric_history(win.info.run_id, "train/elbo")
    assert [m.step for m in history] == [1, 2, 3]
    assert win.info.status == "FINISHED"
    failed = children["g4-b4-d4-s0"]
    assert failed.info.status == "FAILED" and failed.data.tags["granvae.status"] == "failed"
    assert "recall_at_far" not in failed.data.metrics  # NaN is skipped, not logged
    files = {a.path for a in store.client.list_artifacts(win.info.run_id, "model")}
    assert files == {"model/config.json", "model/model.pt"}
    top = {a.path for a in store.client.list_artifacts(win.info.run_id)}
    assert {"evaluation.json", "threshold.json", "status.json", "plots"} <= top
    parent_files = {a.path for a in store.client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "sweep.json", "report"} <= parent_files
    digests = [d.dataset.digest for d in parent.inputs.dataset_inputs]
    assert digests == [DATA_VERSION]


def test_rerunning_log_sweep_reuses_runs_without_duplicates(mlflow_server, tmp_path):
    sweep = make_sweep(tmp_path / "sweep", sweep_id=None)  # id from path + start time
    store, experiment = fast_store(mlflow_server, tmp_path), unique("exp")

    def interrupt(event: str) -> None:  # a Ctrl-C after the first candidate
        if event == "candidate:g1-b4-d4-s0":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        log_sweep(sweep, experiment, store=store, progress=interrupt)
    first = log_sweep(sweep, experiment, store=store)
    write_decision(select(load_rows(sweep)), sweep)  # the parent gains the decision table
    second = log_sweep(sweep, experiment, store=store)
    assert second["parent_run_id"] == first["parent_run_id"]
    assert second["children"] == first["children"]
    exp_id = first["experiment_id"]
    assert len(find_runs(store, exp_id, sweep_id=first["sweep_id"])) == 4
    run_id = first["children"]["g1-b4-d4-s0"]
    assert len(store.client.get_metric_history(run_id, "train/elbo")) == 3
    assert len(store.client.get_metric_history(run_id, "recall_at_far")) == 1
    parent_files = {a.path for a in store.client.list_artifacts(first["parent_run_id"])}
    assert {"decision.csv", "decision.md"} <= parent_files
    parent = store.client.get_run(first["parent_run_id"])  # logged twice, one input
    assert len(parent.inputs.dataset_inputs) == 1


def test_unreachable_server_names_the_uri_and_leaves_files_alone(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    before = snapshot(sweep)
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingUnavailable) as err:
        log_sweep(sweep, "granvae", store=fast_store(uri, tmp_path, attempts=3))
    assert uri in str(err.value) and "after 3 attempt(s)" in str(err.value)
    assert snapshot(sweep) == before


def _kill_on(server, wanted: str):
    def hook(event: str) -> None:
        if event == wanted:
            server.kill()

    return hook


def test_server_killed_mid_run_then_rerun_completes(killable_mlflow_server, tmp_path):
    """kill -9 once the runs and the version exist; restart on the same backend; rerun."""
    server, name, experiment = killable_mlflow_server, unique("killed"), unique("killed")
    sweep = make_sweep(tmp_path / "sweep")
    decision = select(load_rows(sweep))
    write_decision(decision, sweep)
    before = snapshot(sweep)
    store = fast_store(server.uri, tmp_path)
    with pytest.raises(TrackingUnavailable, match=server.uri):
        register_winner(sweep, decision, name, store=store, experiment=experiment,
                        progress=_kill_on(server, "version_created"))  # fmt: skip
    assert snapshot(sweep) == before
    server.restart()  # same backend, same URI
    orphans = versions(store, name)
    assert [v.tags.get(COMPLETE) for v in orphans] == ["false"]  # what the crash left
    assert aliases(store, name) == {}
    version = register_winner(sweep, decision, name, store=store, experiment=experiment)
    left = versions(store, name)
    assert [int(v.version) for v in left] == [version]
    assert left[0].tags[COMPLETE] == "true"
    assert aliases(store, name) == {"challenger": version}
    exp_id = store.experiment_id(experiment)
    assert len(find_runs(store, exp_id, sweep_id="sweep-test-1", role="sweep")) == 1
    assert len(find_runs(store, exp_id, sweep_id="sweep-test-1", role="candidate")) == 3


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _serve(cmd: list[str], url: str, cwd: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env, cwd=cwd)  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).close()
            return proc
        except OSError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"`granvae ui` server did not come up: {cmd}")


def test_embedded_store_needs_no_server_and_the_ui_serves_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep, project = make_sweep(tmp_path / "sweep"), tmp_path / "project"
    store = Store(TrackingSettings(workdir=project))
    assert store.uri == f"sqlite:///{project.resolve()}/mlflow.db"
    version = register_winner(sweep, select(load_rows(sweep)), store=store)
    rows = list_versions(store=store)
    assert [(r["version"], r["aliases"]) for r in rows] == [(version, ["challenger"])]
    assert rows[0]["source"].startswith((project / "mlartifacts").as_uri())
    config = next((project / "mlartifacts").rglob("torch_model/config.json"))
    assert json.loads(config.read_text())["latent_dim"] == 4
    with pytest.raises(ValueError, match="loopback only"):
        ui_command(project, host="0.0.0.0")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    granvae = str(Path(sys.executable).parent / "granvae")
    proc = _serve([granvae, "ui", "--port", str(port)], url, cwd=project)
    try:
        api = (
            f"{url}/api/2.0/mlflow/registered-models/alias?name=granvae-inspector&alias=challenger"
        )
        assert _get_json(api)["model_version"]["version"] == str(version)
    finally:
        proc.send_signal(signal.SIGTERM)  # `granvae ui` alone, not its group: it must clean up
        proc.wait(timeout=30)
    assert _port_closed(port), "the MLflow server outlived `granvae ui`"


def _port_closed(port: int, wait_s: float = 20) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.3)
    return False


def test_a_real_short_sweep_is_tracked(mlflow_server, tmp_path):
    """granvae.sweep.run_sweep's own folder, not the fixture's: the contract both sides read."""
    from granvae.config import Settings
    from granvae.data import generate, write_dataset
    from granvae.sweep import run_sweep

    splits, meta = generate("surfaces", 64, 32, 32, 0, image_size=16)
    write_dataset(tmp_path / "data", splits, meta)
    settings = Settings.model_validate({
        "model": {"arch": "mlp", "latent_dim": 4, "hidden": 32},
        "train": {"epochs": 2, "batch_size": 32, "device": "cpu"},
        "sweep": {"granularities": [1, 2], "betas": [2.0], "workers": 1},
        "evaluation": {"disentanglement": False, "latency_repeats": 2, "iwae_k": 2,
                       "iwae_images": 8},
    })  # fmt: skip
    rows = run_sweep(settings, tmp_path / "data", tmp_path / "sweep", progress=False)
    store = fast_store(mlflow_server, tmp_path)
    logged = log_sweep(tmp_path / "sweep", unique("real"), store=store)
    assert set(logged["children"]) == {r["candidate_id"] for r in rows}
    for row in rows:
        run = store.client.get_run(logged["children"][row["candidate_id"]])
        assert run.data.params["granularity"] == str(row["granularity"])
        assert run.data.params["data_version"] == logged["data_version"]
        assert run.data.metrics["recall_at_far"] == pytest.approx(row["recall_at_far"])
        assert run.data.metrics["elbo"] == pytest.approx(row["elbo"])
        steps = store.client.get_metric_history(run.info.run_id, "train/elbo")
        assert [m.step for m in steps] == [1, 2]


def test_candidate_plots_are_matched_by_the_whole_id(tmp_path):
    from granvae.tracking.runs import _report_files

    report = tmp_path / "report"
    names = ["candidates/g1-b4-d4-s1/traversals.png", "g1-b4-d4-s1_heatmaps.png",
             "g1-b4-d4-s10_heatmaps.png", "v_trajectory.png"]  # fmt: skip
    for name in names:
        (report / name).parent.mkdir(parents=True, exist_ok=True)
        (report / name).write_bytes(b"png")
    found = [p.relative_to(report).as_posix() for p in _report_files(tmp_path, "g1-b4-d4-s1")]
    assert found == names[:2]
