"""The retrain flow as a Prefect *deployment* on a work pool (not `serve`): the worker runs it.

`granvae stack deploy [--line L] [--cron ...]` calls `deploy_retrain`. One deployment per
product line (`retrain-<line>`, or `retrain-default`), each with the line's overrides
baked into its parameters (model name, experiment, data repository, DVC remote prefix in
the stack's bucket, work folder, landing folder) and the line's cron. The flow itself is
`pipelines.schedule.scheduled_retrain`, addressed by module path (the project is installed
in the worker's environment) and run in the project folder (the process worker's
`working_dir`), so relative paths in params.yaml mean what they mean on a laptop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import yaml
from prefect.deployments.runner import EntrypointType

from granvae.config import merge
from granvae.lines import resolve_line
from pipelines.schedule import scheduled_retrain

FLOW_NAME = "scheduled-retrain"


class StackTarget(Protocol):
    """What a deployment needs from the stack it lands on; the stack passes its own state.

    A protocol, not an import of granvae.stack: orchestration does not reach back into the
    stack's internals (granvae.stack.config.StackState satisfies it as is).
    """

    bucket: str
    pool: str
    project: str
    prefect_auth: str  # "user:password" of the Prefect API

    @property
    def prefect_api(self) -> str: ...

    def dvc_remote(self, line: str | None = None) -> str: ...


def deployment_name(line: str | None) -> str:
    return f"retrain-{line or 'default'}"


def line_overrides(state: StackTarget, params: dict[str, Any], line: str | None) -> dict:
    """The params overrides a line's runs get on the stack: its DVC remote is in the bucket."""
    if line is None:
        return {"pipeline": {"remote": state.dvc_remote()}}
    return resolve_line(params, line, remote_root=f"s3://{state.bucket}/dvc").overrides()


def deploy_retrain(
    state: StackTarget,
    params: Path,
    line: str | None = None,
    cron: str | None = None,
    profile: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create or update the line's deployment on the stack's pool; returns name, id, cron."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    params = Path(params).resolve()
    if not params.is_file():
        raise ValueError(f"{params}: params file not found")
    raw = yaml.safe_load(params.read_text()) or {}
    overrides = merge(line_overrides(state, raw, line), extra or {})
    if line and cron is None:
        cron = resolve_line(raw, line).cron
    name = deployment_name(line)
    dep = scheduled_retrain.to_deployment(
        name=name,
        cron=cron,
        parameters={"params": str(params), "profile": profile, "overrides": overrides},
        description=f"Retrain granvae for line {line or 'default'} on the shared stack.",
        tags=["granvae", "retrain", f"line:{line or 'default'}"],
        job_variables={"working_dir": state.project},
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    auth = {PREFECT_API_AUTH_STRING: state.prefect_auth} if state.prefect_auth else {}
    with temporary_settings({PREFECT_API_URL: state.prefect_api, **auth}):
        dep_id = dep.apply(work_pool_name=state.pool)
    return {"name": f"{FLOW_NAME}/{name}", "id": str(dep_id), "cron": cron,
            "overrides": overrides}  # fmt: skip
