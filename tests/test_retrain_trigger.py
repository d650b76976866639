"""Why a retrain ran is on what it registered: the tag granvae.trigger (pipelines.trigger).

The monitored path, every part real: a firing line-monitor flow starts the line's retrain
deployment on the session's Prefect API; that flow run is then executed by Prefect's flow
engine (what a worker runs), in this process, retraining on tiny data against the session's
`mlflow server`. The version it registers, the sweep's parent run and the winner's run carry
the monitor's reasons. A hand-started retrain says `manual` (tests/test_pipeline_flow.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_fixtures import make_project, tiny_params
from test_monitor import _landing

from pipelines.trigger import MANUAL, TRIGGER_TAG, clip, from_monitor, from_tags

DEPLOYMENT = "retrain-trigger-test"


def test_trigger_from_a_runs_tags_and_origin() -> None:
    tags = ["granvae", "monitor", "monitor:alarm rate", "monitor:latent shift"]
    assert from_tags(tags, "retrain-press-7", True) == "monitor: alarm rate; latent shift"
    assert from_tags(["granvae"], "retrain-press-7", True) == "schedule: retrain-press-7"
    assert from_tags(["granvae"], "retrain-press-7", False) == MANUAL
    assert len(clip("x" * 9000)) == 5000


def _read_run(run_id: str):
    from prefect import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(run_id)

    return run_coro_as_sync(read())


@pytest.mark.slow
def test_monitor_triggered_retrain_records_the_reasons_on_version_and_runs(
    tmp_path, mlflow_server, prefect_harness
) -> None:
    from prefect.flow_engine import run_flow

    from granvae.tracking import Store, TrackingSettings
    from granvae.tracking.runs import SWEEP_RUN_ID
    from pipelines.monitor import monitor_line
    from pipelines.schedule import scheduled_retrain

    params = tiny_params(tmp_path, mlflow_server,
                         sweep={"granularities": [2], "betas": [4.0], "seeds": [0]})  # fmt: skip
    project = make_project(tmp_path, params)
    scheduled_retrain.to_deployment(
        name=DEPLOYMENT, parameters={"params": str(project / "params.yaml"), "overrides": {}}
    ).apply()
    landing = tmp_path / "landing"
    landing.mkdir()
    _landing(landing, 3000, drift_at=2000, rng=np.random.default_rng(3))
    report = monitor_line(str(landing), groups=[[0, 1], [2, 3]], baseline=1000, window=1000,
                          retrain_deployment=f"scheduled-retrain/{DEPLOYMENT}")  # fmt: skip
    assert report["fired"]
    run = _read_run(report["retrain_run_id"])
    expected = from_monitor(report["reasons"])
    assert expected.startswith("monitor: alarm rate: CUSUM fired after")
    assert run.parameters["trigger"] == expected

    summary = run_flow(scheduled_retrain, flow_run=run, parameters=run.parameters)
    assert summary["trigger"] == expected
    cfg = TrackingSettings(**params["tracking"])
    client = Store(cfg).client
    version = client.get_model_version(cfg.model_name, str(summary["version"]))
    assert version.tags[TRIGGER_TAG] == expected
    winner = client.get_run(summary["run_id"])
    parent = client.get_run(winner.data.tags[SWEEP_RUN_ID])  # candidate runs are top-level
    assert winner.data.tags[TRIGGER_TAG] == parent.data.tags[TRIGGER_TAG] == expected
