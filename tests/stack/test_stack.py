"""The retrain flow as deployments run by a worker against the production stack.

One stack per module (started by `granvae stack up`'s library call, stopped by `down`):
Postgres-backed MLflow and Prefect, S3 artifacts and S3 DVC remotes in moto, a process
work pool with one worker. Tiny data (64 images, 1 candidate, 1 epoch) keeps the module
within its CI budget; the services and their failure modes are what is under test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_fixtures import tiny_params, write_params
from stack_fixtures import (
    PREFECT_AUTH,
    dvc_complete,
    edge_env,
    failed_attempts,
    granvae,
    prefect_settings,
    retried_runs,
    running_candidates,
    s3_keys,
    stack_folder,
    wait_flow_runs,
    with_credentials,
)

from granvae.stack import StackSettings, down, roles, status, up
from granvae.stack import postgres as pg
from granvae.stack.config import StackState
from granvae.stack.lifecycle import restart_service
from granvae.stack.procs import stop as stop_process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin")),
        reason="PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)",
    ),
]
LINES = ("press-7", "press-9")


@pytest.fixture(scope="module")
def stack() -> Iterator[StackState]:
    """`up` once for the module; `down` at its end (data folder removed)."""
    creds, folder = with_credentials(), stack_folder()
    next(creds)
    root = next(folder)
    project = root / "project"
    project.mkdir()
    try:
        state = up(StackSettings(root=root / "stack", project=project))
        PREFECT_AUTH[state.prefect_api] = state.prefect_auth
        os.environ.update(roles.credentials(state, "admin"))  # this module's MLflow clients
        yield state
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)
        down(root / "stack")
        for gen in (folder, creds):
            next(gen, None)


@pytest.fixture(scope="module")
def params_file(stack: StackState) -> Path:
    """Tiny params: 64 training images, one candidate, one epoch; two product lines."""
    project = Path(stack.project)
    params = tiny_params(
        project, "unused", sweep={"granularities": [2]},
        data={"n_train": 64, "n_val": 64, "n_test": 64},
        pipeline={"max_workers": 1, "retries": 5, "retry_delay_s": 1.0},
        lines={"press-7": {"cron": "0 2 * * *"}, "press-9": {"cron": "30 2 * * *"}},
    )  # fmt: skip
    params["tracking"] = {"model_name": "inspector", "experiment": "plant",
                          "attempts": 6, "backoff_s": 1.0}  # fmt: skip
    return write_params(project / "params.yaml", params)


def test_stack_status_answers_for_every_service(stack: StackState) -> None:
    state, health = status(Path(stack.root))
    assert health == dict.fromkeys(
        ("postgres", "s3", "mlflow", "prefect", "worker", "bucket"), True
    )
    assert state is not None and state.ports["postgres"] != 5432  # a private cluster
    proc = granvae("stack", "status", "--root", stack.root, "--json", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["MLFLOW_TRACKING_URI"] == stack.mlflow_uri
    assert "pg_password" not in proc.stdout and stack.pg_password not in proc.stdout
    assert all(key["secret"] not in proc.stdout for key in stack.s3_keys.values())


def test_prefect_ui_is_told_the_real_api_port(stack: StackState) -> None:
    """The UI reads /ui-settings to find the API; port 4200 there left it unconnected."""
    import urllib.request

    base = stack.prefect_api.removesuffix("/api")
    with urllib.request.urlopen(f"{base}/ui-settings", timeout=30) as resp:
        settings = json.loads(resp.read())
    assert settings["api_url"] == stack.prefect_api


def _deploy_lines(stack: StackState, params_file: Path) -> dict[str, dict]:
    from pipelines.deployment import deploy_retrain

    seeds = {"press-7": 7, "press-9": 9}  # different images: two distinct data histories
    return {
        line: deploy_retrain(stack, params_file, line=line, extra={"data": {"seed": seeds[line]}})
        for line in LINES
    }


def _start(stack: StackState, deployments: dict[str, dict]) -> dict[str, object]:
    from prefect.deployments import run_deployment
    from prefect.settings import temporary_settings

    with temporary_settings(prefect_settings(stack.prefect_api)):
        return {line: run_deployment(d["name"], timeout=0).id for line, d in deployments.items()}


def _versions(stack: StackState, model: str) -> list[dict]:
    from granvae.tracking import Store, TrackingSettings, list_versions

    return list_versions(model, store=Store(TrackingSettings(uri=stack.mlflow_uri)))


def _run_states(stack: StackState, runs: dict[str, object]) -> dict[str, str]:
    """Each line's flow-run state and its task runs' states, for a failure message."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import temporary_settings

    out = {}
    with temporary_settings(prefect_settings(stack.prefect_api)), \
            get_client(sync_client=True) as client:  # fmt: skip
        for line, fid in runs.items():
            run = client.read_flow_run(fid)
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fid])))
            out[line] = f"{run.state_name}: " + ", ".join(
                f"{t.name}={t.state_name}" for t in tasks)  # fmt: skip
    return out


def _log_tail(stack: StackState, service: str, chars: int = 4000) -> str:
    log = Path(stack.root) / "logs" / f"{service}.log"
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


@pytest.fixture(scope="module")
def two_lines(stack: StackState, params_file: Path) -> dict[str, object]:
    """Both lines retrain at once on the one worker. S3 is down when they start (their DVC
    pushes fail and are retried until it is back); Postgres restarts while they train."""
    import time

    deployments = _deploy_lines(stack, params_file)
    stop_process(stack.pids["s3"])  # the S3 endpoint is down when both runs start
    runs = _start(stack, deployments)
    deadline = time.monotonic() + 240
    while failed_attempts(stack.prefect_api, "version-data") < 2 and time.monotonic() < deadline:
        if all(state.startswith(("Failed", "Crashed", "Completed"))
               for state in _run_states(stack, runs).values()):  # fmt: skip
            break  # both runs ended before DVC: the message below says why
        time.sleep(1)
    assert failed_attempts(stack.prefect_api, "version-data") >= 2, (
        f"DVC never met the outage: {_run_states(stack, runs)}\n"
        f"worker log:\n{_log_tail(stack, 'worker')}"
    )
    restart_service(Path(stack.root), "s3")  # back (empty: moto keeps objects in memory)
    deadline = time.monotonic() + 300
    while running_candidates(stack.prefect_api) < 2 and time.monotonic() < deadline:
        time.sleep(2)
    assert running_candidates(stack.prefect_api) >= 2, "the lines never started training"
    pg.restart(stack)  # both flows are mid-run: tracking and orchestration lose their DB
    final = wait_flow_runs(stack.prefect_api, list(runs.values()), timeout=420)
    return {"deployments": deployments, "runs": runs, "final": final}


def test_deployments_carry_each_lines_schedule_and_pool(stack, two_lines) -> None:
    from prefect import get_client
    from prefect.settings import temporary_settings

    with temporary_settings(prefect_settings(stack.prefect_api)):
        with get_client(sync_client=True) as client:
            deps = {line: client.read_deployment_by_name(d["name"])
                    for line, d in two_lines["deployments"].items()}  # fmt: skip
    assert {d.work_pool_name for d in deps.values()} == {stack.pool}
    crons = {line: d.schedules[0].schedule.cron for line, d in deps.items()}
    assert crons == {"press-7": "0 2 * * *", "press-9": "30 2 * * *"}


def test_two_lines_survive_an_s3_outage_and_a_postgres_restart(stack, two_lines) -> None:
    states = {str(k): v for k, v in two_lines["final"].items()}
    assert all(s.is_completed() for s in states.values()), states
    assert retried_runs(stack.prefect_api, "version-data") == 2  # each line met the outage
    for line in LINES:
        rows = _versions(stack, f"inspector-{line}")
        assert len(rows) == 1, f"{line}: expected one version, got {rows}"
        assert rows[0]["aliases"] == ["challenger"] and rows[0]["status"] == "complete"


def test_each_line_has_its_own_model_data_and_bundle(stack, two_lines) -> None:
    from pipelines.sweepdir import code_version, sweep_key

    code = sweep_key("0" * 10, "0" * 8, code_version()).rsplit("-", 1)[-1]
    rows = {line: _versions(stack, f"inspector-{line}")[0] for line in LINES}
    md5 = {line: rows[line]["data_version"].split(":")[1] for line in LINES}
    assert md5["press-7"] != md5["press-9"]  # seeds 7 and 9: two data histories
    for line in LINES:
        row, other = rows[line], md5[next(x for x in LINES if x != line)]
        assert row["git_commit"] and row["sweep_id"].endswith(code), row  # code version
        dvc = s3_keys(stack, f"dvc/{line}/")
        assert f"dvc/{line}/files/md5/{md5[line][:2]}/{md5[line][2:]}.dir" in dvc
        assert dvc_complete(stack, f"dvc/{line}", md5[line]), f"{line}: remote misses files"
        assert not any(other[2:] in key for key in dvc), f"{line}'s remote holds other data"
        repo = Path(stack.project) / "lines" / line / "data-repo"
        assert (repo / "data" / "snapshot.dvc").read_text().count(md5[line]) == 1
        onnx = [k for k in s3_keys(stack, "mlartifacts/") if row["run_id"] in k]
        assert any(k.endswith("model.onnx") for k in onnx), onnx
        bundles = Path(stack.project) / "lines" / line / "work" / "bundles"
        assert [p.name for p in bundles.iterdir()] and all(
            md5[line][:10] in p.name for p in bundles.iterdir()
        )


def test_edge_pulls_the_line_model_over_http(stack, two_lines, tmp_path: Path) -> None:
    """A device with no S3 credentials: the tracking server proxies the bucket."""
    row = _versions(stack, "inspector-press-7")[0]
    out = tmp_path / "bundle"
    proc = subprocess.run(
        [sys.executable, "-m", "granvae_edge", "pull", "--model-uri",
         "models:/inspector-press-7@challenger", "--out", str(out),
         "--tracking-uri", stack.mlflow_uri,
         "--credentials", str(roles.credentials_file(stack, "device"))],
        capture_output=True, text=True, timeout=120, env=edge_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data_version"] == row["data_version"]
    # The flow signed the bundle with the suite's key (tests/conftest.py: GRANVAE_KEYS_DIR),
    # registration re-signed it after writing its URI: a device trusting that key accepts it.
    public = Path(os.environ["GRANVAE_KEYS_DIR"]) / "signing_key.pub.pem"
    verify = subprocess.run(
        [sys.executable, "-m", "granvae_edge", "verify", str(out), "--trusted-key", str(public)],
        capture_output=True, text=True, timeout=120, env=edge_env(),
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "signed by trusted key" in verify.stdout


def test_models_line_lists_one_line(stack, two_lines, params_file: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from granvae.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow_uri)
    result = CliRunner().invoke(app, ["models", "--line", "press-9", "--params", str(params_file)])
    assert result.exit_code == 0, result.output
    assert "inspector-press-9 (1 version)" in result.output
    assert "inspector-press-7" not in result.output


def test_the_prefect_api_refuses_anonymous_deployments_and_foreign_origins(stack) -> None:
    """Issue 14: an anonymous deployment on the pool ran `id` as the stack's owner."""
    body = json.dumps({"name": "x", "flow_id": "00000000-0000-0000-0000-000000000000",
                       "work_pool_name": stack.pool}).encode()  # fmt: skip
    req = urllib.request.Request(stack.prefect_api + "/deployments/", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    assert refused.value.code == 401
    asks = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    preflight = urllib.request.Request(stack.prefect_api + "/deployments/", method="OPTIONS",
                                       headers=asks)  # fmt: skip
    try:
        with urllib.request.urlopen(preflight, timeout=30) as resp:
            allowed = resp.headers.get("access-control-allow-origin")
    except urllib.error.HTTPError as exc:
        allowed = exc.headers.get("access-control-allow-origin")
    assert allowed not in ("*", "http://evil.example")


def _registry_write(stack: StackState, user: str | None, path: str, body: dict) -> int:
    req = urllib.request.Request(f"{stack.mlflow_uri}/api/2.0/mlflow/{path}", method="POST",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    if user:
        pair = f"{user}:{stack.mlflow_users[user]}".encode()
        req.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_registry_writes_need_a_role_and_the_device_only_reads(stack, two_lines) -> None:
    """Issue 14: anonymous model delete, alias move and tag write; now 401 (403 for device).
    The retrain user that registered the model cannot move `champion`; the promoter can."""
    name = "inspector-press-7"
    writes = [("registered-models/alias", {"name": name, "alias": "champion", "version": "1"}),
              ("registered-models/set-tag", {"name": name, "key": "k", "value": "v"}),
              ("model-versions/set-tag", {"name": name, "version": "1", "key": "k", "value": "v"})]
    for path, body in writes:
        assert _registry_write(stack, None, path, body) == 401, path
        assert _registry_write(stack, "device", path, body) == 403, path
    delete = urllib.request.Request(
        f"{stack.mlflow_uri}/api/2.0/mlflow/registered-models/delete", method="DELETE",
        data=json.dumps({"name": name}).encode(), headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(delete, timeout=30)
    assert refused.value.code == 401
    # the flow's own user registered the model but may not promote it; the promoter may
    promote = writes[0]
    assert _registry_write(stack, "retrain", *promote) == 403
    assert _registry_write(stack, "promoter", *promote) == 200
    for role in roles.ROLES:
        assert stat.S_IMODE(roles.credentials_file(stack, role).stat().st_mode) == 0o600
    shown = granvae("stack", "env", "--root", stack.root, "--role", "device", timeout=120)
    assert "MLFLOW_TRACKING_USERNAME=device" in shown.stdout
    assert stack.mlflow_users["admin"] not in shown.stdout
    assert "AWS_ACCESS_KEY_ID" not in shown.stdout  # devices get artifacts via MLflow only
    shown = granvae("stack", "env", "--root", stack.root, "--role", "retrain", timeout=120)
    assert f"AWS_ACCESS_KEY_ID={stack.s3_keys['retrain']['id']}" in shown.stdout


def test_each_service_logs_in_as_its_own_database_role(stack) -> None:
    """Issue 14: MLflow and Prefect shared the superuser. Now each owns its databases and
    cannot connect to the other's; the superuser password is in no service's environment."""
    import psycopg2

    def connect(user: str, database: str) -> bool:
        try:
            psycopg2.connect(host="127.0.0.1", port=stack.ports["postgres"], user=user,
                             password=stack.pg_roles[user], dbname=database,
                             connect_timeout=10).close()  # fmt: skip
        except psycopg2.OperationalError as err:
            assert "permission denied" in str(err), err
            return False
        return True

    assert stack.pg_logins == {"mlflow": "mlflow", "prefect": "prefect"}
    assert connect("mlflow", "mlflow") and connect("mlflow", "mlflow_auth")
    assert connect("prefect", "prefect")
    assert not connect("mlflow", "prefect") and not connect("prefect", "mlflow")
    assert not connect("prefect", "mlflow_auth") and not connect("mlflow", "postgres")
    for service in ("mlflow", "prefect", "worker"):
        environ = Path(f"/proc/{stack.pids[service]}/environ").read_bytes()
        assert stack.pg_password.encode() not in environ, service


def _s3(stack: StackState, role: str | None):
    """A boto3 client signing with a role's key (None: a key the server never issued)."""
    import boto3

    creds = (roles.s3_env(stack, role) if role else
             {"AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000", "AWS_SECRET_ACCESS_KEY": "x" * 40})
    return boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name=stack.region,
                        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])  # fmt: skip


def _s3_code(call) -> int:
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as err:
        return int(err.response["ResponseMetadata"]["HTTPStatusCode"])
    return 200


def test_s3_checks_every_key_and_has_no_reset_api(stack, two_lines) -> None:
    """Issue 14: moto answered anyone, and POST /moto-api/reset wiped every artifact and DVC
    snapshot. Now: no reset API, unsigned or unknown keys 403, the retrain key cannot
    delete, the admin key can."""
    for path in ("/moto-api/reset", "/moto-api/reset-auth"):
        req = urllib.request.Request(stack.s3_endpoint + path, data=b"", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        assert refused.value.code == 403, path
    anonymous = urllib.request.Request(f"{stack.s3_endpoint}/{stack.bucket}/x", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=30)
    assert refused.value.code == 403
    key = s3_keys(stack, "dvc/press-7/")[0]  # a DVC object the retrain wrote
    bucket = stack.bucket
    assert _s3_code(lambda: _s3(stack, None).list_objects_v2(Bucket=bucket)) == 403
    retrain = _s3(stack, "retrain")
    assert _s3_code(lambda: retrain.get_object(Bucket=bucket, Key=key)) == 200
    assert _s3_code(lambda: retrain.delete_object(Bucket=bucket, Key=key)) == 403
    assert _s3_code(lambda: retrain.delete_bucket(Bucket=bucket)) == 403
    assert key in s3_keys(stack, "dvc/press-7/")  # still there
    assert all(status(Path(stack.root))[1].values())


def test_a_wiped_bucket_fails_status_and_up_recreates_it(stack) -> None:
    """Last in the module: the admin key wipes the bucket (the only key that can); status,
    which used to say every service was up, fails; `up` recreates the bucket."""
    admin = _s3(stack, "admin")
    for key in s3_keys(stack, ""):
        admin.delete_object(Bucket=stack.bucket, Key=key)
    admin.delete_bucket(Bucket=stack.bucket)
    _, health = status(Path(stack.root))
    assert health["s3"] and not health["bucket"]
    assert granvae("stack", "status", "--root", stack.root, timeout=120).returncode == 1
    up(StackSettings(root=Path(stack.root), project=Path(stack.project)))
    assert all(status(Path(stack.root))[1].values())
