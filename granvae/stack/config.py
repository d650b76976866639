"""What the stack is (settings, ports, URLs) and where it writes down what is running.

State lives in `<root>/stack.json` (mode 0600: it holds the generated Postgres password),
so `granvae stack down|status|env` in another shell finds the processes `up` started.
S3 credentials of a real endpoint are never written anywhere: they come from the environment
of whoever runs `up` (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), as a factory's secret store
sets them. The local S3 server (s3_server.py) checks keys the stack generates, one per role
(roles.S3_ROLES), kept in stack.json and the roles' 0600 credentials files.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "stack.json"
LOCAL_S3 = "local"  # start a moto S3 server on 127.0.0.1 instead of using a real endpoint
SERVICES = ("postgres", "s3", "mlflow", "prefect", "worker")


class StackError(RuntimeError):
    """A service could not be started, reached or stopped; the message names it and its log."""


@dataclass
class StackSettings:
    """Everything `up` needs; ports of 0 are picked free at start-up."""

    root: Path = Path("runs/stack")
    project: Path = Path(".")  # where the worker runs flows (params.yaml, pipelines/)
    bucket: str = "granvae"
    s3_endpoint: str = LOCAL_S3  # "local" or an http(s) URL (MinIO, an S3 gateway)
    pool: str = "granvae"
    region: str = "us-east-1"
    pg_user: str = "granvae"

    def resolved(self) -> StackSettings:
        return StackSettings(
            **{**asdict(self), "root": self.root.resolve(), "project": self.project.resolve()}
        )


@dataclass
class StackState:
    """What is running: ports, pids and the URLs clients use."""

    root: str
    project: str
    bucket: str
    pool: str
    region: str
    pg_user: str
    pg_password: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    s3_endpoint: str = ""
    local_s3: bool = True
    prefect_auth: str = ""  # "user:password" the Prefect API demands (secret, like pg_password)
    mlflow_users: dict[str, str] = field(default_factory=dict)  # role -> password (secret)
    flask_secret: str = ""  # MLflow's basic-auth app signs its CSRF tokens with it (secret)
    pg_roles: dict[str, str] = field(default_factory=dict)  # service -> its PG password (secret)
    pg_logins: dict[str, str] = field(default_factory=dict)  # service -> PG user it logs in as
    # local S3 only: role -> {"id", "secret"}, the keys s3_server.py provisions (secret)
    s3_keys: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.ports['prefect']}/api"

    @property
    def artifacts(self) -> str:
        return f"s3://{self.bucket}/mlartifacts"

    def dvc_remote(self, line: str | None = None) -> str:
        """The DVC remote prefix for a product line (or the plant-wide default)."""
        return f"s3://{self.bucket}/dvc/{line or 'default'}"

    def pg_url(self, database: str, driver: str = "postgresql", user: str = "") -> str:
        """No password in the URL (it would show in `ps`): clients get PGPASSWORD."""
        login = user or self.pg_user
        return f"{driver}://{login}@127.0.0.1:{self.ports['postgres']}/{database}"

    def client_env(self) -> dict[str, str]:
        """What a shell, a worker or a test needs to use the stack (no secrets)."""
        env = {
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "PREFECT_API_URL": self.prefect_api,
            "AWS_DEFAULT_REGION": self.region,
            "GRANVAE_DVC_REMOTE": self.dvc_remote(),
            # A Prefect server answers 500 while its database restarts; flows and the worker
            # retry those with backoff (429/502/503 are retried by Prefect already), so one
            # restart does not fail a night's retrain.
            "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500,504",
        }
        if self.s3_endpoint:
            env["AWS_ENDPOINT_URL"] = self.s3_endpoint  # boto3, s3fs and DVC read it
            env["MLFLOW_S3_ENDPOINT_URL"] = self.s3_endpoint
        return env

    def save(self) -> None:
        path = Path(self.root) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh, indent=2)
        os.replace(tmp, path)


def load_state(root: Path) -> StackState | None:
    """The state `up` wrote, or None when no stack was ever started in `root`."""
    path = Path(root) / STATE_FILE
    if not path.exists():
        return None
    try:
        return StackState(**json.loads(path.read_text()))
    except (ValueError, TypeError) as err:
        raise StackError(f"{path}: not a stack state file ({err}); remove it and run up") from err


def s3_credentials() -> dict[str, str]:
    """AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment, or a clear error."""
    missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(k)]
    if missing:
        raise StackError(
            f"{' and '.join(missing)} not set: the stack takes S3 credentials from the "
            "environment only (any values work for the local S3 server)"
        )
    return {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_dict(state: StackState) -> dict[str, Any]:
    """The state without the secrets (for `status --json`)."""
    out = asdict(state)
    out.pop("pg_password", None)
    out.pop("prefect_auth", None)
    out.pop("mlflow_users", None)
    out.pop("flask_secret", None)
    out.pop("s3_keys", None)
    out.pop("pg_roles", None)
    return out
