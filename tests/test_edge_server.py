"""Edge HTTP server on real loopback sockets: load, bad input, hot reload, health and metrics."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from edge_fixtures import (
    edge_env,
    free_port,
    http,
    make_bundle,
    noisy_gray,
    png_bytes,
    run_cli,
    running_server,
)
from granvae_edge import BundleError
from granvae_edge.calibrate import new_revision, order_statistic_threshold, write_revision
from granvae_edge.manifest import read_manifest
from granvae_edge.server import make_server
from PIL import Image

MAX_BYTES = 64 * 1024
GOOD = png_bytes(noisy_gray(np.random.default_rng(0), 20))


@pytest.fixture()
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle", threshold=1.0)


def _recalibrate(bundle_dir, value: float) -> None:
    """Write a new manifest revision with threshold ``value`` (what `calibrate` does)."""
    manifest = read_manifest(bundle_dir)
    choice = order_statistic_threshold([value], 0.5)
    write_revision(bundle_dir, new_revision(manifest, choice, 0.5, "test"))


def test_concurrent_requests_all_succeed(bundle):
    with running_server(bundle) as (url, _server):
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: http("POST", url + "/score", GOOD), range(160)))
        assert all(code == 200 for code, _ in results)
        assert {body["revision"] for _, body in results} == {1}
        assert all(body["decision"] is False for _, body in results)


def _raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"}" in chunk:
                break
        return b"".join(chunks)


def _transparent_png() -> bytes:
    buf = io.BytesIO()
    Image.new("LA", (32, 32), (100, 0)).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_inputs_get_4xx_and_the_server_keeps_serving(bundle):
    cases = {
        "corrupt": (b"\x89PNG\r\n\x1a\nnot really", 400),
        "truncated": (GOOD[: len(GOOD) // 2], 400),
        "wrong channels": (_transparent_png(), 400),
        "empty body": (b"", 400),
        "huge upload": (b"\0" * (4 * MAX_BYTES), 413),
    }
    with running_server(bundle, max_bytes=MAX_BYTES) as (url, server):
        for name, (body, status) in cases.items():
            code, payload = http("POST", url + "/score", body)
            assert code == status, (name, payload)
            assert payload["error"], name
            assert http("POST", url + "/score", GOOD)[0] == 200, f"not serving after {name}"

        port = server.server_address[1]
        # Judged on Content-Length alone: 50 MB announced, 64 KiB sent, answer comes anyway.
        head = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n"
        assert b" 413 " in _raw_request(port, head, b"\0" * 65536).split(b"\r\n")[0]
        # With Expect: 100-continue the body is never even sent.
        head = head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
        assert b" 413 " in _raw_request(port, head).split(b"\r\n")[0]
        assert http("POST", url + "/score", GOOD)[0] == 200
        assert http("GET", url + "/nope")[0] == 404


def test_healthz_and_metrics(bundle):
    with running_server(bundle, max_bytes=MAX_BYTES) as (url, _server):
        code, health = http("GET", url + "/healthz")
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert code == 200 and health["ok"] is True
        assert health["revision"] == 1 and health["model_sha256"] == manifest["model_sha256"]
        for _ in range(5):
            http("POST", url + "/score", GOOD)
        http("POST", url + "/score", b"")
        http("POST", url + "/score", png_bytes(np.full((32, 32), 255, np.uint8)))
        code, metrics = http("GET", url + "/metrics")
        assert code == 200
        assert metrics["requests"] == {"ok": 6, "bad_input": 1}
        assert metrics["decisions"] == {"pass": 5, "reject": 1}
        latency = metrics["latency_ms"]
        assert latency["window"] == 6 and 0 < latency["p50"] <= latency["p95"]


def test_tampered_bundle_is_refused_at_start(bundle):
    with open(bundle / "model.onnx", "ab") as fh:
        fh.write(b"tamper")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        make_server(bundle, "127.0.0.1", 0)
    result = run_cli("serve", "--bundle", str(bundle), "--port", str(free_port()), timeout=30)
    assert result.returncode == 2
    assert "refusing to serve" in result.stderr and "model.onnx" in result.stderr


def test_bad_reload_is_refused_and_the_old_bundle_keeps_serving(bundle):
    original = (bundle / "model.onnx").read_bytes()
    with running_server(bundle) as (url, _server):
        (bundle / "model.onnx").write_bytes(original + b"tamper")
        code, body = http("POST", url + "/reload")
        assert code == 409 and "sha256 mismatch" in body["error"]
        assert body["serving_revision"] == 1
        assert http("POST", url + "/score", GOOD)[0] == 200

        (bundle / "model.onnx").write_bytes(original)
        (bundle / "manifest.json").write_text("{ not json")
        code, body = http("POST", url + "/reload")
        assert code == 409 and "not valid JSON" in body["error"]
        assert http("POST", url + "/score", GOOD)[0] == 200
        assert http("GET", url + "/metrics")[1]["reloads"] == {"refused": 2}


def test_hot_reload_under_load_drops_no_request(bundle):
    stop = threading.Event()
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(400):  # bounded even if the main thread fails
            if stop.is_set():
                return
            code, body = http("POST", url + "/score", GOOD)
            with lock:
                results.append((code, body.get("revision", -1)))

    with running_server(bundle) as (url, _server):
        workers = [threading.Thread(target=client) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            for k in range(5):
                time.sleep(0.05)
                _recalibrate(bundle, 2.0 + k)
                code, body = http("POST", url + "/reload")
                assert code == 200 and body["revision"] == k + 2
            time.sleep(0.05)
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=30)
    assert len(results) > 20
    assert all(code == 200 for code, _ in results)
    revisions = [rev for _, rev in results]
    assert revisions[0] == 1 and max(revisions) == 6


def test_serve_cli_reloads_on_sighup(bundle):
    port = free_port()
    cmd = [sys.executable, "-m", "granvae_edge", "serve", "--bundle", str(bundle),
           "--port", str(port), "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=edge_env(), stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: http("GET", url + "/healthz", timeout=2)[0] == 200)
        _recalibrate(bundle, 3.0)
        proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: http("GET", url + "/healthz", timeout=2)[1]["revision"] == 2)
        assert http("POST", url + "/score", GOOD)[1]["threshold"] == 3.0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read()


def _wait_for(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
