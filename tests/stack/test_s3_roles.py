"""The stack's local S3 server (granvae.stack.s3_server) as a real process: every request
signed by a key it issued, each role's policy enforced, no admin API.

The whole stack (tests/stack/test_stack.py) checks the same through its services; this
module is the fast check of the server itself, attack by attack.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from granvae.stack import roles
from granvae.stack.config import StackState, free_port

BUCKET = "granvae"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, StackState]]:
    root = tmp_path_factory.mktemp("s3")
    state = StackState(root=str(root), project=str(root), bucket=BUCKET, pool="p",
                       region="us-east-1", pg_user="u", local_s3=True)  # fmt: skip
    roles.fill_secrets(state)
    keys = root / "keys.json"
    roles.write_private(keys, json.dumps(state.s3_keys))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "granvae.stack.s3_server", "--port", str(port),
         "--keys", str(keys), "--bucket", BUCKET],
        stdout=subprocess.DEVNULL, stderr=open(root / "log", "w"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/", timeout=1)
            except urllib.error.HTTPError:
                break  # answering (403: unsigned)
            except OSError:
                time.sleep(0.1)
        yield url, state
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _client(url: str, key_id: str, secret: str):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret)  # fmt: skip


def _role(server, role: str):
    url, state = server
    env = roles.s3_env(state, role)
    return _client(url, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])


def _code(call) -> int:
    try:
        call()
    except ClientError as err:
        return int(err.response["ResponseMetadata"]["HTTPStatusCode"])
    return 200


def test_each_role_does_what_it_may_and_nothing_more(server) -> None:
    admin, retrain = _role(server, "admin"), _role(server, "retrain")
    assert _code(lambda: admin.create_bucket(Bucket=BUCKET)) == 200
    assert _code(lambda: retrain.create_bucket(Bucket="another")) == 403
    assert _code(lambda: retrain.put_object(Bucket=BUCKET, Key="dvc/a", Body=b"x")) == 200
    assert retrain.get_object(Bucket=BUCKET, Key="dvc/a")["Body"].read() == b"x"
    assert _code(lambda: retrain.head_bucket(Bucket=BUCKET)) == 200
    assert _code(lambda: retrain.list_objects_v2(Bucket=BUCKET)) == 200
    big = io.BytesIO(b"y" * (6 * 2**20))  # a multipart upload, as DVC and MLflow make them
    retrain.upload_fileobj(big, BUCKET, "mlartifacts/model.onnx",
                           Config=TransferConfig(multipart_threshold=5 * 2**20))  # fmt: skip
    assert _code(lambda: retrain.delete_object(Bucket=BUCKET, Key="dvc/a")) == 403
    assert _code(lambda: retrain.delete_bucket(Bucket=BUCKET)) == 403
    lifecycle = {"Rules": [{"ID": "wipe", "Status": "Enabled", "Filter": {"Prefix": ""},
                            "Expiration": {"Days": 1}}]}  # fmt: skip
    assert _code(lambda: retrain.put_bucket_lifecycle_configuration(
        Bucket=BUCKET, LifecycleConfiguration=lifecycle)) == 403  # fmt: skip
    assert _code(lambda: admin.delete_object(Bucket=BUCKET, Key="dvc/a")) == 200


def test_unknown_keys_bad_signatures_and_unsigned_requests_are_refused(server) -> None:
    url, state = server
    admin_id = state.s3_keys["admin"]["id"]
    forged = _client(url, admin_id, "not-the-secret-not-the-secret-not-the-se")
    assert _code(lambda: forged.list_objects_v2(Bucket=BUCKET)) == 403
    stranger = _client(url, "AKIAUNKNOWNKEY000000", "x" * 40)
    assert _code(lambda: stranger.list_objects_v2(Bucket=BUCKET)) == 403
    for method, path in (("GET", "/"), ("DELETE", f"/{BUCKET}/dvc/a"), ("PUT", "/newbucket")):
        body = None if method == "GET" else b""
        req = urllib.request.Request(url + path, method=method, data=body)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403, (method, path)


def test_the_admin_api_is_gone(server) -> None:
    url, _ = server
    for path in ("/moto-api/reset", "/moto-api/reset-auth", "/moto-api/"):
        req = urllib.request.Request(url + path, data=b"0", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403, path
        assert b"no admin API" in refused.value.read()


def test_the_stack_keeps_its_keys_across_ups(tmp_path: Path) -> None:
    """stack.json keeps the keys and the server provisions them from its key file at every
    start, so clients' credentials stay valid when S3 restarts (test_stack.py's outage)."""
    state = StackState(root=str(tmp_path), project=str(tmp_path), bucket=BUCKET, pool="p",
                       region="us-east-1", pg_user="u", local_s3=True)  # fmt: skip
    roles.fill_secrets(state)
    first = dict(state.s3_keys)
    roles.fill_secrets(state)  # a second `up` keeps what stack.json holds
    assert state.s3_keys == first
    assert all(k["id"].startswith("AKIA") and len(k["id"]) == 20 for k in first.values())
    assert set(first) == set(roles.S3_ROLES)
