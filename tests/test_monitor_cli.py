"""`granvae monitor` and the line-monitor Prefect flow on a landing zone as ship lays it out."""

from __future__ import annotations

import json

import numpy as np
from test_monitor import _landing
from typer.testing import CliRunner

from granvae.cli import app


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _cli(*args: str) -> _Result:
    res = CliRunner().invoke(app, ["monitor", *args])
    return _Result(res.exit_code, res.stdout, res.stderr)


def test_cli_fires_on_drift_and_is_quiet_before_it(tmp_path):
    drifted, quiet = tmp_path / "drifted", tmp_path / "quiet"
    drifted.mkdir()
    quiet.mkdir()
    _landing(drifted, 3000, drift_at=2000, rng=np.random.default_rng(3))
    _landing(quiet, 3000, drift_at=10**9, rng=np.random.default_rng(3))
    res = _cli(str(drifted), "--groups", "0,1;2,3", "--json", str(tmp_path / "r.json"))
    assert res.returncode == 1, res.stderr
    assert "ALERT alarm rate" in res.stdout and "group 1" in res.stdout
    assert json.loads((tmp_path / "r.json").read_text())["moved"]["group"] == 1
    res = _cli(str(quiet), "--groups", "0,1;2,3")
    assert res.returncode == 0 and "quiet" in res.stdout, res.stdout + res.stderr
    res = _cli(str(tmp_path / "nowhere"))
    assert res.returncode == 2 and "no stream/ folder" in res.stderr


def test_monitor_flow_reports_on_a_real_prefect_api(tmp_path, prefect_harness):
    from pipelines.monitor import monitor_line

    _landing(tmp_path, 3000, drift_at=2000, rng=np.random.default_rng(3))
    report = monitor_line(str(tmp_path), groups=[[0, 1], [2, 3]], baseline=1000, window=1000)
    assert report["fired"] and report["moved"]["group"] == 1
    assert "retrain_run_id" not in report  # no deployment named: report only


def test_firing_monitor_starts_the_lines_retrain_deployment(tmp_path, prefect_harness):
    """A real deployment on the harness API (no worker: the started run stays scheduled)."""
    from prefect import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    from pipelines.monitor import monitor_line
    from pipelines.schedule import scheduled_retrain

    dep = scheduled_retrain.to_deployment(name="retrain-monitor-test")
    dep_id = dep.apply()
    _landing(tmp_path, 3000, drift_at=2000, rng=np.random.default_rng(3))
    report = monitor_line(str(tmp_path), groups=[[0, 1], [2, 3]], baseline=1000, window=1000,
                          retrain_deployment="scheduled-retrain/retrain-monitor-test")  # fmt: skip

    async def read_run():
        async with get_client() as client:
            return await client.read_flow_run(report["retrain_run_id"])

    run = run_coro_as_sync(read_run())
    assert run.deployment_id == dep_id
    assert {"monitor", "monitor:alarm rate"} <= set(run.tags)
