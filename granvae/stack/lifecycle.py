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
from pathlib import Path

from granvae.stack import postgres, procs, services
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
    )  # fmt: skip


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
    s3_credentials()  # fail before starting anything
    cfg.root.mkdir(parents=True, exist_ok=True)
    state = load_state(cfg.root) or _new_state(cfg)
    state.project = str(cfg.project)
    state.save()
    ready, started = _ready(state), []
    try:
        for name in SERVICES:
            if name == "s3" and not state.local_s3:
                services.ensure_bucket(state)
                continue
            if ready[name]():
                continue
            _stop_one(state, name)  # a stale process on a dead port
            _start(state, name)
            started.append(name)
            state.save()
    except BaseException:
        for name in reversed(started):
            _stop_one(state, name, quiet=True)
        state.save()
        raise
    return state


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
    """Stop every service (reverse order); data and ports are kept. Returns what stopped."""
    state = load_state(root)
    if state is None:
        return []
    stopped = []
    for name in reversed(SERVICES):
        was = name in state.pids or (name == "postgres" and postgres.running(state))
        _stop_one(state, name)
        if was:
            stopped.append(name)
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
