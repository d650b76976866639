"""`granvae schedule --cron "0 2 * * *"`: serve the retrain flow on a schedule (embedded).

Why a wrapper flow: `flow.serve` runs each scheduled run from the flow's entrypoint, which
would lose a task runner chosen at call time. `scheduled_retrain` reads the config inside
the run and starts `retrain` as a subflow with the configured runner (processes or Dask).
For a Prefect server with a work pool, see docs/pipeline.md (`prefect deploy`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.deployments.runner import EntrypointType

DEPLOYMENT = "granvae-retrain"


@flow(name="scheduled-retrain")
def scheduled_retrain(
    params: str | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    trigger: str | None = None,
) -> dict[str, Any]:
    """One scheduled retrain; the subflow does the work. `trigger` (the monitor passes its
    reasons) is recorded on the MLflow runs and the version; without it the run's own tags
    and origin say why (pipelines.trigger)."""
    from pipelines.flow import run_retrain
    from pipelines.trigger import current_deployment_run

    return run_retrain(params, profile, overrides, trigger=trigger or current_deployment_run())


def deployment(
    cron: str, params: str | None, profile: str | None, overrides: dict[str, Any] | None
):
    """The RunnerDeployment `serve` runs (separate so it can be inspected and tested)."""
    return scheduled_retrain.to_deployment(
        name=DEPLOYMENT,
        cron=cron,
        parameters={"params": params, "profile": profile, "overrides": overrides or {}},
        description="Retrain granvae on the latest landed images, on a schedule.",
        tags=["granvae", "retrain"],
        entrypoint_type=EntrypointType.MODULE_PATH,  # pipelines.schedule.scheduled_retrain
    )


def serve(
    cron: str,
    params: str | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Block, running the flow at every cron tick, until Ctrl-C."""
    from prefect import serve as prefect_serve

    from pipelines.runtime import shared_api

    with shared_api():  # the served runs and their workers share one API
        prefect_serve(deployment(cron, params, profile, overrides))
