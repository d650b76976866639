"""The production stack for the stack tests: started once per module, stopped at its end.

Real processes on 127.0.0.1 only: PostgreSQL (Debian's package, a private cluster run as
the `postgres` user when we are root), moto's S3 server, `mlflow server` on Postgres with
artifacts proxied to the bucket, a Prefect server on Postgres, one process worker.
The stack folder is a fresh /tmp folder with mode 0711, because the postgres user must be
able to enter it (pytest's own tmp folders are private to root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CREDS = {"AWS_ACCESS_KEY_ID": "granvae-test", "AWS_SECRET_ACCESS_KEY": "granvae-test-secret"}


def stack_folder() -> Iterator[Path]:
    """A folder the postgres user can enter; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="granvae-stack-", dir="/tmp"))
    os.chmod(root, 0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def with_credentials() -> Iterator[None]:
    """S3 credentials in the environment (the stack reads them nowhere else)."""
    saved = {k: os.environ.get(k) for k in CREDS}
    os.environ.update(CREDS)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def granvae(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """The granvae CLI in its own process, as a user runs it."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "granvae"), *args], capture_output=True, text=True,
        timeout=timeout, env=env or os.environ.copy(),
    )  # fmt: skip


def s3_keys(state: Any, prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=state.s3_endpoint, region_name=state.region)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=state.bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


PREFECT_AUTH: dict[str, str] = {}  # Prefect API URL -> its "user:password" (stack fixture)


def prefect_settings(api: str) -> dict[Any, Any]:
    """temporary_settings() updates for a stack's Prefect API: its URL and its auth pair."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    auth = PREFECT_AUTH.get(api)
    return {PREFECT_API_URL: api, **({PREFECT_API_AUTH_STRING: auth} if auth else {})}


def wait_flow_runs(api: str, ids: list[Any], timeout: float) -> dict[Any, Any]:
    """Poll until every flow run is final; returns id -> final state. Bounded in time."""
    from prefect import get_client
    from prefect.settings import temporary_settings

    deadline, final = time.monotonic() + timeout, {}
    with temporary_settings(prefect_settings(api)), get_client(sync_client=True) as client:
        while time.monotonic() < deadline and len(final) < len(ids):
            for fid in ids:
                state = client.read_flow_run(fid).state
                if state is not None and state.is_final():
                    final[fid] = state
            time.sleep(2)
    missing = [str(i) for i in ids if i not in final]
    assert not missing, f"flow runs not finished after {timeout} s: {missing}"
    return final


def running_candidates(api: str) -> int:
    """How many `candidate` task runs are running or done (training has begun)."""
    runs = _task_runs(api, "candidate")
    return sum(1 for r in runs if r.state and (r.state.is_running() or r.state.is_final()))


def edge_env() -> dict[str, str]:
    """An edge device: granvae_edge from deploy/, no S3 credentials, no tracking settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "MLFLOW_", "PREFECT_"))}  # fmt: skip
    env["PYTHONPATH"] = str(ROOT / "deploy")
    return env


def _task_runs(api: str, name: str) -> list[Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
    from prefect.settings import temporary_settings

    with temporary_settings(prefect_settings(api)), get_client(sync_client=True) as client:
        found = TaskRunFilter(name=TaskRunFilterName(like_=name))
        return client.read_task_runs(task_run_filter=found)


def failed_attempts(api: str, name: str) -> int:
    """Task runs named like `name` that failed at least once (waiting for or in a retry)."""
    waiting = ("AwaitingRetry", "Retrying")
    return sum(1 for r in _task_runs(api, name)
               if r.state and (r.state.name in waiting or r.run_count > 1))  # fmt: skip


def retried_runs(api: str, name: str) -> int:
    """Task runs named like `name` that completed after more than one attempt."""
    return sum(1 for r in _task_runs(api, name)
               if r.state and r.state.is_completed() and r.run_count > 1)  # fmt: skip


def dvc_complete(state: Any, prefix: str, md5: str) -> bool:
    """The remote holds the snapshot's .dir listing and every file it names."""
    import boto3

    client = boto3.client("s3", endpoint_url=state.s3_endpoint, region_name=state.region)
    key = f"{prefix}/files/md5/{md5[:2]}/{md5[2:]}.dir"
    listing = json.loads(client.get_object(Bucket=state.bucket, Key=key)["Body"].read())
    keys = set(s3_keys(state, f"{prefix}/files/md5/"))
    return all(f"{prefix}/files/md5/{e['md5'][:2]}/{e['md5'][2:]}" in keys for e in listing)
