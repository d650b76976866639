"""Roles on the registry: MLflow's basic-auth app, an anonymous client, and a device user.

A real `mlflow server --app-name basic-auth` (users in its own database, default permission
READ): the anonymous registry writes issue 14 measured (registered-model delete, alias move, tag
write) are refused with 401; a `device` user reads, so `granvae-edge pull --credentials` gets
the signed bundle, but every write answers 403; an anonymous pull is refused with a clear error.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import urllib.error
import urllib.request

import onnx
import pytest
from conftest import start_auth_server
from edge_fixtures import run_cli
from signing_fixtures import STATS_FILE, make_keys, make_signed_bundle

pytestmark = pytest.mark.slow

ADMIN_PW = secrets.token_urlsafe(16)
DEVICE_PW = secrets.token_urlsafe(16)
API = "/api/2.0/mlflow"


def rest(uri: str, method: str, path: str, body: dict | None = None, user=None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(uri + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    if user:
        pair = base64.b64encode(":".join(user).encode()).decode()
        req.add_header("Authorization", f"Basic {pair}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """The auth server with a `device` user and one signed bundle registered by the admin."""
    import mlflow
    import mlflow.onnx

    root = tmp_path_factory.mktemp("mlflow-auth")
    server = start_auth_server(root, ADMIN_PW, "basic-auth")
    try:
        admin = ("admin", ADMIN_PW)
        body = {"username": "device", "password": DEVICE_PW}
        assert rest(server.uri, "POST", f"{API}/users/create", body, admin) == 200
        key, public = make_keys(root / "keys")
        source = make_signed_bundle(root / "source", key, threshold=2.5)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            mp.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PW)
            client = mlflow.MlflowClient(tracking_uri=server.uri)
            run = client.create_run(client.create_experiment("roles"))
            mlflow.onnx.save_model(onnx.load(str(source / "model.onnx")), str(root / "bundle"))
            for name in ("manifest.json", "manifest.sig", STATS_FILE):
                shutil.copy(source / name, root / "bundle" / name)
            client.log_artifacts(run.info.run_id, str(root / "bundle"), "bundle")
            client.create_registered_model("inspector")
            src = f"{run.info.artifact_uri}/bundle"  # mlflow-artifacts:/..., what pull reads
            client.create_model_version("inspector", src, run_id=run.info.run_id)
            client.set_registered_model_alias("inspector", "champion", "1")
        yield server.uri, public, root
    finally:
        server.stop()


WRITES = [
    ("DELETE", f"{API}/registered-models/delete", {"name": "inspector"}),
    ("POST", f"{API}/registered-models/alias", {"name": "inspector", "alias": "champion",
                                                 "version": "1"}),  # fmt: skip
    ("POST", f"{API}/registered-models/set-tag", {"name": "inspector", "key": "k", "value": "v"}),
    ("POST", f"{API}/model-versions/set-tag", {"name": "inspector", "version": "1", "key": "k",
                                               "value": "v"}),  # fmt: skip
]


@pytest.mark.parametrize("method,path,body", WRITES, ids=[w[1].rsplit("/", 2)[-2] + "/" +
                                                          w[1].rsplit("/", 1)[-1] for w in WRITES])
def test_anonymous_and_device_writes_are_refused(registry, method, path, body):
    uri, _, _ = registry
    assert rest(uri, method, path, body) == 401
    assert rest(uri, method, path, body, ("device", DEVICE_PW)) == 403
    assert rest(uri, method, path, body, ("device", "wrong-password")) == 401


def test_the_device_role_pulls_with_credentials_and_anonymous_pull_is_refused(registry, tmp_path):
    uri, public, _ = registry
    creds = tmp_path / "device.env"
    creds.write_text(f"MLFLOW_TRACKING_USERNAME=device\nMLFLOW_TRACKING_PASSWORD={DEVICE_PW}\n")
    creds.chmod(0o600)
    out = tmp_path / "bundle"
    args = ("pull", "--model-uri", "models:/inspector@champion", "--out", str(out),
            "--tracking-uri", uri, "--trusted-key", str(public))  # fmt: skip
    anonymous = run_cli(*args, "--retries", "0")
    assert anonymous.returncode == 1 and "HTTP 401" in anonymous.stderr, anonymous.stderr
    assert not out.exists()
    pulled = run_cli(*args, "--credentials", str(creds))
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["signed_by"] is not None
