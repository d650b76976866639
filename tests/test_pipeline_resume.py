"""kill -9 in the middle of the sweep, then rerun: nothing finished is trained again.

The flow runs in a subprocess (its own process group, like a host that loses power) with
one candidate process at a time. As soon as the first candidate's result is persisted
(its evaluation.json exists and Prefect stored the task result) the whole group gets
SIGKILL. The rerun must take that candidate from the cache, train only the others, and
register exactly one version on the unchanged data version.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_fixtures import make_project, tiny_params, versions

from pipelines.flow import run_retrain

pytestmark = pytest.mark.slow


def _wait_then_kill(proc: subprocess.Popen, work: Path, n_candidates: int, log: Path) -> None:
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        done = list(work.glob("sweeps/*/candidates/*/evaluation.json"))
        stored = list(work.glob("prefect-results/candidate-*"))
        if done and stored and len(done) < n_candidates:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return
        if proc.poll() is not None:
            pytest.fail(f"flow ended before the kill (exit {proc.returncode}):\n{log.read_text()}")
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"no candidate finished in time:\n{log.read_text()[-3000:]}")


def _task_states(flow_run_id: str) -> list[tuple[str, str]]:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
    with get_client(sync_client=True) as client:
        found = client.read_task_runs(flow_run_filter=runs)
    return [(t.name, t.state.name if t.state else "") for t in found]


def test_kill_9_mid_sweep_then_resume(tmp_path, mlflow_server, prefect_harness) -> None:
    params = tiny_params(tmp_path, mlflow_server, pipeline={"max_workers": 1})
    project = make_project(tmp_path, params)
    work = Path(params["pipeline"]["work_dir"])
    log = tmp_path / "killed.log"
    env = {**os.environ, "PREFECT_API_URL": prefect_harness}
    cmd = [sys.executable, "-m", "pipelines", "retrain", "--params", str(project / "params.yaml")]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        _wait_then_kill(proc, work, 2, log)

    (sweep_dir,) = work.glob("sweeps/*")
    killed_version = json.loads((sweep_dir / "sweep.json").read_text())["data_version"]
    finished = {
        p.parent.name: (p.stat().st_mtime_ns, (p.parent / "model" / "model.pt").stat().st_mtime_ns)
        for p in sweep_dir.glob("candidates/*/evaluation.json")
    }
    assert len(finished) == 1
    assert versions(params) == []  # killed before registration

    summary = run_retrain(str(project / "params.yaml"))

    assert summary["sweep_dir"] == str(sweep_dir)  # the same, deterministic folder
    for cid, stamps in finished.items():
        cdir = sweep_dir / "candidates" / cid
        now = ((cdir / "evaluation.json").stat().st_mtime_ns,
               (cdir / "model" / "model.pt").stat().st_mtime_ns)  # fmt: skip
        assert now == stamps, f"{cid} was trained again"
    states = [s for name, s in _task_states(summary["flow_run_id"]) if name.startswith("candidate")]
    assert states.count("Cached") == 1 and len(states) == 2
    assert set(summary["candidates"].values()) == {"finished"}
    listed = versions(params)
    assert len(listed) == 1 and listed[0]["version"] == summary["version"]
    assert summary["data_version"] == killed_version == listed[0]["data_version"]
    _one_ended_run_per_candidate(params, summary)


def _one_ended_run_per_candidate(params: dict, summary: dict) -> None:
    """The killed candidate's live run was left RUNNING by kill -9; the rerun reused it
    (docs/pipeline.md "Resume and live runs"): one run per candidate, none still RUNNING."""
    from mlflow import MlflowClient

    client = MlflowClient(params["tracking"]["uri"])
    runs = client.search_runs([client.get_run(summary["run_id"]).info.experiment_id])
    candidates = [r for r in runs if r.data.tags.get("granvae.role") == "candidate"]
    ids = sorted(r.data.tags["granvae.candidate_id"] for r in candidates)
    assert ids == sorted(summary["candidates"])
    assert {r.info.status for r in candidates} == {"FINISHED"}
