"""Ctrl-C during training stops `granvae retrain` within seconds, with no orphans, says
what finished and how to resume; the rerun says it resumes (and stops on Ctrl-C again).

Real processes throughout: the `granvae` console script in its own session (a terminal's
foreground process group), its Prefect task-runner workers, SIGINT sent to the whole group
as a terminal's Ctrl-C does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from pipeline_fixtures import make_project, tiny_params, versions

pytestmark = pytest.mark.slow
GRANVAE = Path(sys.executable).with_name("granvae")


def _start(cmd: list[str], cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_for(proc: subprocess.Popen, ready, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            pytest.fail(f"retrain ended early (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"never reached the point to interrupt:\n{log.read_text()[-3000:]}")


def _ctrl_c(proc: subprocess.Popen, log: Path) -> tuple[float, str]:
    """SIGINT to the whole group; (seconds until the CLI exited, its output). No orphans."""
    family = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    assert len(family) >= 3, "expected the CLI plus candidate worker processes"
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running 60 s after Ctrl-C:\n{log.read_text()[-3000:]}")
    seconds = time.monotonic() - start
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(pid) and _alive(pid) for pid in family):
        if time.monotonic() > deadline:
            left = [pid for pid in family if psutil.pid_exists(pid) and _alive(pid)]
            pytest.fail(f"orphans left after Ctrl-C: {left}")
        time.sleep(0.1)
    return seconds, log.read_text()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_ctrl_c_at_training_stops_everything_and_rerun_resumes(
    tmp_path, mlflow_server, prefect_harness
) -> None:
    train = {"epochs": 400, "batch_size": 64, "early_stop_patience": None}
    params = tiny_params(tmp_path, mlflow_server, train=train)
    project = make_project(tmp_path, params)
    work = Path(params["pipeline"]["work_dir"])
    env = {**os.environ, "PREFECT_API_URL": prefect_harness, "OMP_NUM_THREADS": "1"}
    cmd = [str(GRANVAE), "retrain", "--params", str(project / "params.yaml")]
    checkpoints = lambda: list(work.glob("sweeps/*/candidates/*/checkpoint.pt"))  # noqa: E731

    log = tmp_path / "first.log"
    proc = _start(cmd, tmp_path, env, log)
    _wait_for(proc, checkpoints, log)  # a candidate has finished an epoch: training
    seconds, out = _ctrl_c(proc, log)

    assert proc.returncode == 130, out
    assert seconds < 15, f"took {seconds:.1f} s to stop:\n{out}"
    assert "interrupted: the retrain stopped" in out
    assert "0 of 2 candidates evaluated" in out and "with a checkpoint" in out
    assert f"To resume, rerun: granvae retrain --params {project / 'params.yaml'}" in out
    assert "Traceback" not in out
    assert versions(params) == []
    assert f"training curves live in MLflow: {mlflow_server}/#/experiments/" in out
    killed = _candidate_runs(params)  # the live runs of the candidates that were training
    assert killed and set(killed.values()) == {"KILLED"}, killed

    log2 = tmp_path / "rerun.log"
    proc = _start(cmd, tmp_path, env, log2)
    _wait_for(proc, lambda: "resuming the sweep" in log2.read_text(), log2)
    _, out2 = _ctrl_c(proc, log2)  # the second run stops the same way
    assert "continue from their last epoch checkpoint" in out2
    assert proc.returncode == 130 and "To resume, rerun:" in out2
    again = _candidate_runs(params)  # reused, not duplicated (a twin would raise below)
    assert set(killed) <= set(again) and set(again.values()) == {"KILLED"}, again


def _candidate_runs(params: dict) -> dict[str, str]:
    """candidate id -> its MLflow run's status; one run per candidate (asserted)."""
    from mlflow import MlflowClient

    client = MlflowClient(params["tracking"]["uri"])
    exp = client.get_experiment_by_name(params["tracking"]["experiment"])
    runs = client.search_runs([exp.experiment_id]) if exp else []
    found: dict[str, str] = {}
    for run in runs:
        cid = run.data.tags.get("granvae.candidate_id")
        assert cid not in found, f"two runs for candidate {cid}"
        found[cid] = run.info.status
    return found
