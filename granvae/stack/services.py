"""The four HTTP services of the stack, each one command line plus a readiness probe.

- s3: `moto` in server mode on 127.0.0.1 (only when no real endpoint is given), and the
  bucket, created through boto3 once the endpoint answers (local or real).
- mlflow: `mlflow server` with its backend store on Postgres and artifacts proxied to
  s3://<bucket>/mlartifacts, so clients (and edge devices) need no S3 credentials.
- prefect: `prefect server start` with its database on Postgres.
- worker: `prefect worker start --type process` on the pool (created if missing), running
  flow runs in the project folder with the tracking URI and S3 settings in its environment.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from granvae.stack import postgres as pg
from granvae.stack import procs, roles
from granvae.stack.config import StackError, StackState


def log(state: StackState, name: str) -> Path:
    return Path(state.root) / "logs" / f"{name}.log"


def _bin(name: str) -> str:
    """A console script of this interpreter's environment, activated or not."""
    return str(Path(sys.executable).parent / name)


def base_env(state: StackState) -> dict[str, str]:
    """The caller's environment + the stack's client settings + the retrain role's S3 key
    (MLflow's artifact proxy, the worker and its flows write objects; none may delete)."""
    return {**os.environ, **state.client_env(), **roles.s3_env(state, "retrain"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DVC_NO_ANALYTICS": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # fmt: skip


def _launch(
    state: StackState, name: str, cmd: list[str], env: dict[str, str],
    ready: Callable[[], bool], timeout: float, cwd: Path | None = None,
) -> int:  # fmt: skip
    """Spawn, wait until ready; a service that never gets ready is stopped, not orphaned."""
    proc = procs.spawn(name, cmd, log(state, name), env, cwd=cwd)
    try:
        procs.wait_until(name, ready, lambda: procs.alive(proc.pid), log(state, name), timeout)
    except BaseException:
        procs.stop(proc.pid)
        raise
    return proc.pid


def start_s3(state: StackState) -> int:
    """moto behind s3_server.py: keys checked per role, no admin API."""
    folder = Path(state.root) / "s3"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = folder / "keys.json"
    roles.write_private(keys, json.dumps(state.s3_keys))
    cmd = [sys.executable, "-m", "granvae.stack.s3_server", "--host", "127.0.0.1",
           "--port", str(state.ports["s3"]), "--keys", str(keys),
           "--bucket", state.bucket]  # fmt: skip
    return _launch(state, "s3", cmd, base_env(state), lambda: s3_ready(state), 60)


def s3_ready(state: StackState) -> bool:
    return procs.http_ok(state.s3_endpoint + "/") if state.s3_endpoint else True


def ensure_bucket(state: StackState) -> None:
    """Create the bucket unless it exists (real endpoints may forbid CreateBucket)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3", endpoint_url=state.s3_endpoint or None, region_name=state.region,
                          **_boto_creds(state))  # fmt: skip
    try:
        client.head_bucket(Bucket=state.bucket)
        return
    except ClientError:
        pass
    try:
        client.create_bucket(Bucket=state.bucket)
    except (ClientError, BotoCoreError) as err:
        raise StackError(f"s3: cannot create bucket {state.bucket!r} at "
                         f"{state.s3_endpoint or 'AWS'}: {err}") from err  # fmt: skip


def bucket_ready(state: StackState) -> bool:
    """The bucket exists: a reset S3 server answers while every artifact and remote is gone."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3", endpoint_url=state.s3_endpoint or None, region_name=state.region,
                          **_boto_creds(state))  # fmt: skip
    try:
        client.head_bucket(Bucket=state.bucket)
    except (ClientError, BotoCoreError):
        return False
    return True


def _boto_creds(state: StackState) -> dict[str, str]:
    """The admin role's key: the stack itself creates and checks the bucket."""
    creds = roles.s3_env(state, "admin")
    return {"aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"]}  # fmt: skip


def start_mlflow(state: StackState) -> int:
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
           "--port", str(state.ports["mlflow"]), "--workers", "1",
           "--backend-store-uri", state.pg_url("mlflow", "postgresql+psycopg2",
                                               pg.login(state, "mlflow")[0]),
           "--artifacts-destination", state.artifacts,
           "--app-name", "granvae-auth"]  # roles.py, mlflow_app.py: users, rules  # fmt: skip
    env = {**base_env(state), **roles.server_env(state), "PGPASSWORD": pg.login(state, "mlflow")[1]}
    return _launch(state, "mlflow", cmd, env, lambda: mlflow_ready(state), 180)


def mlflow_ready(state: StackState) -> bool:
    return procs.http_ok(state.mlflow_uri + "/health")


def prefect_env(state: StackState) -> dict[str, str]:
    home = Path(state.root) / "prefect-home"
    user, password = pg.login(state, "prefect")
    url = state.pg_url("prefect", "postgresql+asyncpg", user).replace(
        f"{user}@", f"{user}:{password}@"
    )  # in the environment, not argv; Prefect builds its own pool from the URL
    return {**base_env(state), "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": url,
            # API auth (server demands it, worker and its flows send it); CORS: its own UI only
            "PREFECT_SERVER_API_AUTH_STRING": state.prefect_auth,
            "PREFECT_API_AUTH_STRING": state.prefect_auth,
            "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": f"http://127.0.0.1:{state.ports['prefect']}",
            }  # fmt: skip


def start_prefect(state: StackState) -> int:
    cmd = [_bin("prefect"), "server", "start", "--host", "127.0.0.1",
           "--port", str(state.ports["prefect"])]  # fmt: skip
    env = prefect_env(state)
    env.pop("PREFECT_API_URL", None)  # the server itself needs none
    # The UI asks /ui-settings where the API is; unset, that answers port 4200 whatever
    # --port says, and the UI cannot connect.
    env["PREFECT_UI_API_URL"] = state.prefect_api
    return _launch(state, "prefect", cmd, env, lambda: prefect_ready(state), 240)


def prefect_ready(state: StackState) -> bool:
    return procs.http_ok(state.prefect_api + "/health")


def start_worker(state: StackState) -> int:
    """One process worker; flow runs start in the project folder as subprocesses."""
    cmd = [_bin("prefect"), "worker", "start", "--pool", state.pool, "--type", "process",
           "--name", f"{state.pool}-worker-1"]  # fmt: skip
    env = {**prefect_env(state), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           **roles.credentials(state, "retrain")}  # its flows write runs, models, versions
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL")  # a worker talks to the API, not the DB
    ready = lambda: worker_ready(state)  # noqa: E731
    return _launch(state, "worker", cmd, env, ready, 120, cwd=Path(state.project))


def worker_ready(state: StackState) -> bool:
    """The pool exists and has a worker that sent a heartbeat (status ONLINE)."""
    req = urllib.request.Request(
        f"{state.prefect_api}/work_pools/{state.pool}/workers/filter",
        data=b"{}", headers={"Content-Type": "application/json"}, method="POST",
    )  # fmt: skip
    pair = base64.b64encode(state.prefect_auth.encode()).decode("ascii")
    req.add_header("Authorization", f"Basic {pair}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            workers = json.loads(resp.read())
    except (OSError, ValueError):
        return False
    return any(w.get("status") == "ONLINE" for w in workers)
