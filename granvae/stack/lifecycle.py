"""`up`, `down`, `status`: the stack as one unit.

`up` is idempotent: a service that answers is left alone, one that does not is (re)started,
in dependency order (postgres, s3 -> mlflow, prefect -> worker). If any start fails, `up`
stops what it started in this call and raises one error naming the service and its log,
so a failed `up` leaves nothing half-running. `down` stops in reverse order and keeps the
data (Postgres cluster, stack.json with its ports), so the next `up` brings back the same
registry and the same URLs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from granvae.stack import postgres, procs, roles, services
from granvae.stack.config import (
    LOCAL_S3,
    SERVICES,
    StackError,
    StackSettings,
    StackState,
    free_port,
    load_state,
    s3_credentials,
)

# Start order: each stage needs the one before; services within a stage start side by side.
STAGES = (("postgres", "s3"), ("mlflow", "prefect"), ("worker",))


def _new_state(cfg: StackSettings) -> StackState:
    local = cfg.s3_endpoint == LOCAL_S3
    ports = {name: free_port() for name in ("postgres", "mlflow", "prefect")}
    if local:
        ports["s3"] = free_port()
    endpoint = f"http://127.0.0.1:{ports['s3']}" if local else cfg.s3_endpoint.rstrip("/")
    return StackState(
        root=str(cfg.root), project=str(cfg.project), bucket=cfg.bucket, pool=cfg.pool,
        region=cfg.region, pg_user=cfg.pg_user, pg_password=secrets.token_urlsafe(24),
        ports=ports, s3_endpoint="" if endpoint == "aws" else endpoint, local_s3=local,
        prefect_auth=_prefect_auth(),
    )  # fmt: skip


def _prefect_auth() -> str:
    """The Prefect API's basic-auth pair: no anonymous deployment runs commands on this host."""
    return f"granvae:{secrets.token_urlsafe(24)}"


def _ready(state: StackState) -> dict[str, Callable[[], bool]]:
    return {
        "postgres": lambda: postgres.running(state),
        "s3": lambda: services.s3_ready(state),
        "mlflow": lambda: services.mlflow_ready(state),
        "prefect": lambda: services.prefect_ready(state),
        "worker": lambda: procs.alive(state.pids.get("worker"))
        and services.worker_ready(state),
    }


def _start(state: StackState, name: str) -> None:
    if name == "postgres":
        postgres.init(state)
        state.pids["postgres"] = postgres.start(state)
        postgres.create_databases(state)
    elif name == "s3":
        if state.local_s3:
            state.pids["s3"] = services.start_s3(state)
        services.ensure_bucket(state)
    else:
        state.pids[name] = getattr(services, f"start_{name}")(state)


def up(cfg: StackSettings) -> StackState:
    """Start every service that is not answering; returns the running stack's state."""
    cfg = cfg.resolved()
    if cfg.s3_endpoint != LOCAL_S3:
        s3_credentials()  # a real endpoint's keys come from the caller: fail before starting
    cfg.root.mkdir(parents=True, exist_ok=True)
    state = load_state(cfg.root) or _new_state(cfg)
    state.project = str(cfg.project)
    state.prefect_auth = state.prefect_auth or _prefect_auth()  # a state from before auth
    roles.fill_secrets(state)
    state.save()
    started: list[str] = []
    try:
        for stage in STAGES:
            _start_stage(state, stage, started)
        roles.ensure_users(state)  # idempotent: on a running MLflow, missing users only
    except BaseException:
        for name in reversed(started):
            _stop_one(state, name, quiet=True)
        state.save()
        raise
    return state


def _start_stage(state: StackState, stage: tuple[str, ...], started: list[str]) -> None:
    """Start the stage's dead services side by side (their start-up is mostly imports)."""
    ready = _ready(state)
    if "s3" in stage and not state.local_s3:
        services.ensure_bucket(state)
        stage = tuple(n for n in stage if n != "s3")
    todo = [name for name in stage if not ready[name]()]
    if "s3" in stage and state.local_s3 and "s3" not in todo:
        services.ensure_bucket(state)  # S3 answers, but its bucket may have been wiped
    for name in todo:
        _stop_one(state, name)  # a stale process on a dead port
    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        futures = {name: pool.submit(_start, state, name) for name in todo}
    started.extend(name for name in todo if name in state.pids)
    state.save()
    for fut in futures.values():
        fut.result()  # the first failure, after every sibling has finished starting


def _stop_one(state: StackState, name: str, quiet: bool = False) -> None:
    try:
        if name == "postgres":
            postgres.stop(state)
        else:
            procs.stop(state.pids.get(name))
        state.pids.pop(name, None)
    except StackError:
        if not quiet:
            raise


def down(root: Path) -> list[str]:
    """Stop every service (stages in reverse order); data and ports are kept."""
    state = load_state(root)
    if state is None:
        return []
    stopped = []
    for stage in reversed(STAGES):
        was = [n for n in stage if n in state.pids or (n == "postgres" and postgres.running(state))]
        with ThreadPoolExecutor(max_workers=len(stage)) as pool:
            for fut in [pool.submit(_stop_one, state, name) for name in stage]:
                fut.result()
        stopped.extend(was)
    state.save()
    return stopped


def status(root: Path) -> tuple[StackState | None, dict[str, bool]]:
    """(state, service -> answering) for every service of the stack in `root`."""
    state = load_state(root)
    if state is None:
        return None, {}
    checks = _ready(state)
    health = {name: bool(checks[name]()) for name in SERVICES}
    if not state.local_s3:
        health["s3"] = True if not state.s3_endpoint else services.s3_ready(state)
    health["bucket"] = health["s3"] and services.bucket_ready(state)  # artifacts + DVC remotes
    return state, health


def restart_service(root: Path, name: str) -> None:
    """Stop and start one service (operators, and the failure tests)."""
    state = load_state(root)
    if state is None:
        raise StackError(f"{root}: no stack here; run `granvae stack up` first")
    if name == "postgres":
        postgres.restart(state)
        state.pids["postgres"] = postgres.pid(state) or 0
    else:
        _stop_one(state, name)
        _start(state, name)
    state.save()
