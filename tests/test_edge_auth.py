"""The device API's credentials on a real loopback server: token, rate gate, bind rule, files.

/reload without the token is 401; a flood of valid reloads is 429 after the first while scoring
keeps being answered; `serve` will not bind beyond loopback without a token; token and
credential files readable by others are refused.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from edge_fixtures import make_bundle, png_bytes, run_cli
from granvae_edge.auth import (
    AuthError,
    authorization_header,
    load_token,
    mlflow_credentials,
    require_token_for,
)
from granvae_edge.server import ServerLimits, make_server

TOKEN = "device-token-0123456789abcdef"
GOOD = png_bytes(np.full((32, 32), 128, np.uint8))


def request(url, method="POST", body=None, token=None):
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@contextlib.contextmanager
def served(bundle, interval=0.0, token=TOKEN):
    limits = ServerLimits(reload_interval_s=interval)
    server = make_server(bundle, "127.0.0.1", 0, intra_op_threads=1, limits=limits, token=token)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle")


def test_reload_without_or_with_a_wrong_token_is_401(bundle):
    with served(bundle) as url:
        code, body = request(url + "/reload")
        assert code == 401 and "Bearer" in body["error"]
        assert request(url + "/reload", token="wrong-token-0123456789")[0] == 401
        assert request(url + "/reload", token=TOKEN)[0] == 200
        assert request(url + "/score", body=GOOD)[0] == 200  # scoring needs no token


def test_a_reload_flood_is_429_while_scoring_stays_answered(bundle):
    codes: list[int] = []
    scores: list[int] = []
    stop = threading.Event()

    def flood(token):
        while not stop.is_set():
            code = request(url + "/reload", token=token)[0]
            codes.append(code)

    def score():
        # A fixed number of frames, not a time window: on a loaded 2-core CI machine the
        # flood threads share the GIL, and what matters is that every frame is answered.
        time.sleep(0.3)  # let the flood start first
        for _ in range(12):
            scores.append(request(url + "/score", body=GOOD)[0])

    with served(bundle, interval=30.0) as url:
        threads = [threading.Thread(target=flood, args=(TOKEN if k % 2 else None,))
                   for k in range(8)]  # fmt: skip
        scorer = threading.Thread(target=score)
        for t in [*threads, scorer]:
            t.start()
        scorer.join(timeout=120)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert codes.count(200) == 1, sorted(set(codes))
    assert set(codes) == {200, 401, 429} and codes.count(429) > 10
    assert scores == [200] * 12


def test_serve_refuses_a_non_loopback_bind_without_a_token(bundle, tmp_path):
    result = run_cli("serve", "--bundle", str(bundle), "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2 and "without a token" in result.stderr
    with pytest.raises(AuthError):
        require_token_for("192.168.1.20", None)
    require_token_for("::1", None)  # loopback: the demo needs no token
    require_token_for("0.0.0.0", TOKEN)


def test_token_and_credential_files_must_be_private(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o644)
    with pytest.raises(AuthError, match="readable by others"):
        load_token(path)
    path.chmod(0o600)
    assert load_token(path) == TOKEN
    path.write_text("short")
    with pytest.raises(AuthError, match="at least"):
        load_token(path)
    creds = tmp_path / "device.env"
    creds.write_text("MLFLOW_TRACKING_USERNAME=device\nMLFLOW_TRACKING_PASSWORD='p w'\n")
    creds.chmod(0o640)
    with pytest.raises(AuthError, match="readable by others"):
        mlflow_credentials(creds, env={})
    creds.chmod(0o600)
    header = authorization_header(mlflow_credentials(creds, env={}))
    assert base64.b64decode(header.split()[1]).decode() == "device:p w"
    env = {"MLFLOW_TRACKING_TOKEN": "tok", "MLFLOW_TRACKING_USERNAME": "u"}
    assert authorization_header(mlflow_credentials(None, env=env)) == "Bearer tok"
