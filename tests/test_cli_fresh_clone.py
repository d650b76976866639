"""A fresh clone, no options: `granvae retrain` and one scheduled run both succeed, and the
project's own git history is untouched (the data repository lives under the work folder).
In that data repository `dvc metrics show` lists the retrain and `dvc repro` rebuilds the
registered version's decision from the committed dvc.yaml and resolved params.

The clone's params.yaml is shrunk to tiny data (a working-folder params.yaml overrides the
embedded defaults, which is itself under test); tracking is the embedded default (sqlite in
the clone), Prefect is the session harness, git and DVC are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from pipeline_fixtures import ONE_CANDIDATE, dvc, git

from granvae.config import merge
from pipelines.schedule import DEPLOYMENT

ROOT = Path(__file__).resolve().parents[1]
GRANVAE = str(Path(sys.executable).parent / "granvae")
pytestmark = pytest.mark.slow



def _env(prefect_api: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    env.pop("MLFLOW_TRACKING_URI", None)  # the embedded default: sqlite in the clone
    return env




def _history(repo: Path) -> list[str]:
    return git(repo, "log", "--all", "--format=%H %s").splitlines()


def _trigger(limit_s: float) -> UUID:
    """`prefect deployment run scheduled-retrain/granvae-retrain`, once it is served."""
    from prefect.deployments import run_deployment

    deadline = time.monotonic() + limit_s
    while True:
        try:
            run = run_deployment(f"scheduled-retrain/{DEPLOYMENT}", timeout=0)
            return run.id
        except Exception:  # noqa: BLE001 - not registered yet: the server is still starting
            assert time.monotonic() < deadline, "the schedule never registered its deployment"
            time.sleep(2)


def _state(run_id: UUID):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def _serve_once(clone: Path, env: dict[str, str], limit_s: float = 300) -> None:
    """`granvae schedule` serving; one run triggered the way the README says; wait for it."""
    log = open(clone / "schedule.log", "wb")
    cmd = [GRANVAE, "schedule"]
    env = {**env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    proc = subprocess.Popen(
        cmd, cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + limit_s
    try:
        run_id = _trigger(limit_s)
        while not (state := _state(run_id)).is_final():
            assert proc.poll() is None, (clone / "schedule.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the triggered run did not finish in time"
            time.sleep(2)
        assert state.is_completed(), (clone / "schedule.log").read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


def test_retrain_and_schedule_in_a_fresh_clone(tmp_path, prefect_harness):
    clone = tmp_path / "granvae"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    before = _history(clone)
    params = merge(yaml.safe_load((clone / "params.yaml").read_text()), ONE_CANDIDATE)
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = _env(prefect_harness)

    out = subprocess.run([GRANVAE, "retrain"], cwd=clone, env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "challenger: granvae-inspector version 1" in out.stdout
    data_repo = clone / "runs" / "retrain" / "data-repo"
    assert git(data_repo, "log", "--format=%s").splitlines()[-1] == "dvc: init data repository"
    assert (clone / "mlflow.db").is_file()
    assert _history(clone) == before  # nothing committed into the code repository
    assert git(clone, "status", "--porcelain") == "M params.yaml"

    from granvae.tracking import Store, TrackingSettings, list_versions
    from granvae.tracking.provenance import CODE_COMMIT, code_tags

    rows = list_versions(store=Store(TrackingSettings(workdir=clone)))
    assert rows[0]["git_commit"] == code_tags()[CODE_COMMIT] != "unknown"
    shown = dvc(data_repo, "metrics", "show", "--json")  # the last retrain, as written
    assert rows[0]["candidate_id"] in shown and "recall_at_far" in shown
    assert dvc(data_repo, "status").strip() == "Data and pipelines are up to date."
    dvc(data_repo, "repro", "--force")  # the committed dvc.yaml + resolved params, no Prefect
    decision = data_repo / "runs" / "dvc" / "decision" / "winner.json"
    assert json.loads(decision.read_text())["winner"] == rows[0]["candidate_id"]

    _serve_once(clone, env)
    assert _history(clone) == before
    rows = list_versions(store=Store(TrackingSettings(workdir=clone)))
    assert {r["status"] for r in rows} == {"complete"}
    assert len({r["data_version"] for r in rows}) == 1  # same images: no new data version
