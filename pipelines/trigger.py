"""Why a retrain ran: one line, recorded on its MLflow runs and its registered version.

A person asking "why is there a version 14?" should find the answer on the version itself,
not in Prefect's database: the tag `granvae.trigger` says `manual` (the CLI, a test, a
deployment run started by hand), `schedule: <deployment>` (a cron tick of a deployment) or
`monitor: <the monitor's reasons>` (pipelines.monitor started it because the line drifted).

The monitor passes its reasons as the deployment run's `trigger` parameter; a run of the
deployment without that parameter falls back on the run's own tags (`monitor`,
`monitor:<test>`) and on whether Prefect scheduled it.
"""

from __future__ import annotations

from collections.abc import Iterable

TRIGGER_TAG = "granvae.trigger"
MANUAL = "manual"
LIMIT = 5000  # MLflow's model_version_tags.value is VARCHAR(5000)


def clip(trigger: str) -> str:
    """A trigger that fits a version tag (a long reason list is cut, marked as cut)."""
    return trigger if len(trigger) <= LIMIT else trigger[: LIMIT - 3] + "..."


def from_monitor(reasons: Iterable[str]) -> str:
    """The monitor's reasons as one trigger line."""
    return clip("monitor: " + "; ".join(reasons))


def from_tags(tags: Iterable[str], deployment: str | None, auto_scheduled: bool) -> str:
    """A deployment run's trigger when none was passed: its monitor tags, else its origin."""
    tags = list(tags)
    tests = [t.removeprefix("monitor:") for t in tags if t.startswith("monitor:")]
    if "monitor" in tags:
        return from_monitor(tests or ["(reasons not passed)"])
    if auto_scheduled and deployment:
        return f"schedule: {deployment}"
    return MANUAL


def current_deployment_run() -> str:
    """The trigger of the flow run this is called in (a deployment's scheduled-retrain run)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import deployment, flow_run

    run_id = flow_run.get_id()
    if not run_id:  # called outside a flow run: a person started it
        return MANUAL
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    return from_tags(run.tags or [], deployment.get_name(), bool(run.auto_scheduled))
