"""`granvae stack up|down|status|env|deploy`: the production stack on this host.

    granvae stack up                  # postgres, S3 (local moto), mlflow, prefect, worker
    eval "$(granvae stack env --role admin)"   # URLs + that role's MLflow user and S3 key

With a real S3 endpoint (`--s3-endpoint URL`) its keys come from your secret store:
export AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY before `up`.
    granvae stack deploy --line press-7 --cron "0 2 * * *"
    granvae stack status
    granvae stack down
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from granvae.stack.config import LOCAL_S3, StackError, StackSettings, as_dict

app = typer.Typer(no_args_is_help=True, help=__doc__)
console = Console()
RootOpt = Annotated[Path, typer.Option(help="folder for the stack's data, logs and state")]
DEFAULT_ROOT = Path("runs/stack")


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command("up")
def up_cmd(
    root: RootOpt = DEFAULT_ROOT,
    project: Annotated[Path, typer.Option(help="folder the worker runs flows in")] = Path("."),
    bucket: Annotated[str, typer.Option(help="S3 bucket for artifacts and DVC")] = "granvae",
    s3_endpoint: Annotated[
        str, typer.Option(help="'local' (a moto server on 127.0.0.1), an http(s) URL, or 'aws'")
    ] = LOCAL_S3,
    pool: Annotated[str, typer.Option(help="Prefect process work pool")] = "granvae",
) -> None:
    """Start every service that is not answering (idempotent)."""
    from granvae.stack.lifecycle import up

    try:
        state = up(StackSettings(root, project, bucket, s3_endpoint, pool))
    except StackError as err:
        _fail(err)
    console.print(f"stack up in {state.root}")
    for key, value in state.client_env().items():
        console.print(f"  {key}={value}", highlight=False)


@app.command("down")
def down_cmd(root: RootOpt = DEFAULT_ROOT) -> None:
    """Stop every service; the data (registry, runs, bucket contents of a real S3) stays."""
    from granvae.stack.lifecycle import down

    try:
        stopped = down(root)
    except StackError as err:
        _fail(err)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command("status")
def status_cmd(
    root: RootOpt = DEFAULT_ROOT,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Each service: answering or not, its pid and URL. Exit 1 unless all answer."""
    from granvae.stack.lifecycle import status

    try:
        state, health = status(root)
    except StackError as err:
        _fail(err)
    if state is None:
        console.print(f"no stack in {root} (run `granvae stack up`)")
        raise typer.Exit(code=1)
    if as_json:
        print(json.dumps({"health": health, **as_dict(state), **state.client_env()}, indent=2))
    else:
        for name, ok in health.items():
            mark = "[green]up[/green]" if ok else "[red]down[/red]"
            console.print(f"{name:9s} {mark}  pid {state.pids.get(name, '-')}")
        console.print(f"mlflow  {state.mlflow_uri}\nprefect {state.prefect_api}", highlight=False)
    raise typer.Exit(code=0 if all(health.values()) else 1)


@app.command("env")
def env_cmd(
    root: RootOpt = DEFAULT_ROOT,
    prefect_auth: Annotated[
        bool,
        typer.Option("--prefect-auth", help="also export PREFECT_API_AUTH_STRING (a secret)"),
    ] = False,
    role: Annotated[
        str | None,
        typer.Option(help="also export this role's MLflow user and password, and its local S3 "
                    "key (admin, retrain): admin|retrain|promoter|device"),
    ] = None,
) -> None:
    """`export` lines for a shell: eval "$(granvae stack env)" (no secrets unless asked)."""
    from granvae.stack import roles
    from granvae.stack.config import load_state

    state = load_state(root)
    if state is None:
        _fail(StackError(f"no stack in {root} (run `granvae stack up`)"))
    env = state.client_env()
    if prefect_auth:  # `prefect deployment run` and friends need it; stack.json is 0600
        env["PREFECT_API_AUTH_STRING"] = state.prefect_auth
    if role is not None:
        try:
            env.update(roles.credentials(state, role))
        except (StackError, KeyError):
            _fail(StackError(f"no credentials for role {role!r} (one of {', '.join(roles.ROLES)};"
                             " run `granvae stack up`)"))  # fmt: skip
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")


@app.command("deploy")
def deploy_cmd(
    root: RootOpt = DEFAULT_ROOT,
    params: Annotated[Path, typer.Option(help="params.yaml")] = Path("params.yaml"),
    line: Annotated[str | None, typer.Option(help="product line (see docs/stack.md)")] = None,
    cron: Annotated[str | None, typer.Option(help="cron; default: the line's, else none")] = None,
    profile: Annotated[str | None, typer.Option(help="quick | full")] = None,
) -> None:
    """Register the retrain flow as a deployment on the stack's work pool."""
    from granvae.stack.config import load_state

    state = load_state(root)
    if state is None:
        _fail(StackError(f"no stack in {root} (run `granvae stack up`)"))
    from pipelines.deployment import deploy_retrain

    try:
        dep = deploy_retrain(state, params, line=line, cron=cron, profile=profile)
    except (StackError, ValueError) as err:
        _fail(err)
    console.print(f"deployment {dep['name']} ({dep['id']}) on pool {state.pool}, cron "
                  f"{dep['cron'] or 'none'}", highlight=False)  # fmt: skip
