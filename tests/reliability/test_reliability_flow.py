"""kill -9 of the retrain flow at its ship stages (export, registration), then rerun.

Mid-sweep kills are covered by tests/test_pipeline_resume.py; these add the two stages that
write what devices and the registry see. The flow runs in its own process group (a host losing
power); when the stage's first trace appears on disk or in MLflow the whole group gets SIGKILL.
The rerun must then leave: exactly one registered version, every alias pointing at an existing
version, a complete bundle that the edge runtime verifies and whose model is the registered
one, and a DVC remote that holds the data version the rerun names.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from edge_fixtures import run_cli, sha256_file
from pipeline_fixtures import aliases, make_project, tiny_params, versions

from pipelines.flow import run_retrain


def _model_exists(tracking_uri: str, name: str) -> bool:
    url = f"{tracking_uri}/api/2.0/mlflow/registered-models/get?" + urllib.parse.urlencode(
        {"name": name}
    )
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _stage_reached(stage: str, work: Path, params: dict) -> bool:
    if stage == "export":  # the exporter's temp folder or the bundle itself
        return any((work / "bundles").glob("*")) if (work / "bundles").exists() else False
    return _model_exists(params["tracking"]["uri"], params["tracking"]["model_name"])


def _run_and_kill(stage: str, cmd: list[str], cwd: Path, env: dict, work: Path, params: dict,
                  log: Path) -> None:  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline:
            if _stage_reached(stage, work, params):
                return
            if proc.poll() is not None:
                pytest.fail(f"flow ended before reaching {stage}:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
        pytest.fail(f"{stage} not reached in time:\n{log.read_text()[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


FULL = os.environ.get("GRANVAE_RELIABILITY_FULL") == "1"
# Measured on the shared 2-core machine: 188 s (export) and 242 s (register) per case, two
# retrains each; tests/reliability must stay under 2 minutes in CI, so these run in
# `make reliability` (which writes docs/reliability.md), not in `make test`.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not FULL,
        reason="two retrains per stage (3-4 min each on 2 cores) exceed the CI budget of "
        "tests/reliability; `make reliability` (GRANVAE_RELIABILITY_FULL=1) runs them",
    ),
]


@pytest.mark.parametrize("stage", ["export", "register"])
def test_kill_9_at_a_ship_stage_then_rerun(tmp_path, mlflow_server, prefect_harness, stage):
    params = tiny_params(tmp_path, mlflow_server, sweep={"granularities": [1], "betas": [4.0],
                                                         "seeds": [0]})  # fmt: skip
    project = make_project(tmp_path, params)
    work = Path(params["pipeline"]["work_dir"])
    env = {**os.environ, "PREFECT_API_URL": prefect_harness}
    cmd = [sys.executable, "-m", "pipelines", "retrain", "--params", str(project / "params.yaml")]
    _run_and_kill(stage, cmd, tmp_path, env, work, params, tmp_path / "killed.log")
    assert len(versions(params)) <= 1

    summary = run_retrain(str(project / "params.yaml"))

    listed = versions(params)
    assert [v["version"] for v in listed] == [summary["version"]]  # one version, the rerun's
    known = {v["version"] for v in listed}
    assert all(v in known for v in aliases(params).values())  # no orphaned alias
    bundle = Path(summary["bundle"])
    assert run_cli("verify", str(bundle)).returncode == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model_sha256"] == sha256_file(bundle / "model.onnx")
    assert summary["data_version"] == listed[0]["data_version"]
    # Half bundles from the killed export may remain beside it, never in its place:
    stray = sorted(p.name for p in bundle.parent.iterdir() if p != bundle)
    assert all(name.startswith(".") for name in stray), stray
    dvc = [sys.executable, "-m", "dvc", "status", "--cloud", "--json"]
    status = subprocess.run(dvc, cwd=project, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and json.loads(status.stdout or "{}") == {}, status.stdout
