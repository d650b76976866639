"""`pull` against a hostile registry: every malformed answer is one clear line, nothing changes.

The registry here is a real HTTP server on loopback (hostile.py) that answers what a broken
deployment could: HTML, lists, NUL bytes, endless nesting, short bodies, huge files, file://
URIs. After each refusal the bundle already installed at --out must be byte-for-byte intact
and no temp folder may be left beside it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edge_fixtures import edge_env, make_bundle, run_cli, sha256_file
from granvae_edge import load_bundle
from granvae_edge.pull import PullError, pull
from hostile import (
    API,
    ART,
    hostile_registry,
    json_answer,
    raw_answer,
    registry_routes,
    stalling_file,
)

BUNDLE_FILE = f"{ART}/1/abc/artifacts/bundle"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The bundle the healthy registry serves (threshold 2.5)."""
    return make_bundle(tmp_path_factory.mktemp("src") / "bundle", threshold=2.5)


@pytest.fixture()
def installed(tmp_path) -> Path:
    """A good bundle already on the device (threshold 9.0): must survive every refusal."""
    return make_bundle(tmp_path / "device" / "bundle", threshold=9.0)


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith("."))


def _nan_manifest(source: Path) -> bytes:
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["threshold"]["value"] = float("nan")
    return json.dumps(manifest).encode()  # Python writes the non-standard token NaN


def _inf_manifest(source: Path) -> bytes:
    return _nan_manifest(source).replace(b"NaN", b"Infinity")


# name -> (route overrides given the source bundle, substring of the one-line error)
CASES = {
    "HTML login page": (
        lambda s: {f"{API}/registered-models/alias": raw_answer(b"<html>login</html>",
                                                                 "text/html")},
        "HTML page",
    ),
    "missing key": (
        lambda s: {f"{API}/registered-models/alias": json_answer({"model_version": {}})},
        "no 'model_version.version'",
    ),
    "list instead of object": (
        lambda s: {f"{API}/registered-models/alias": json_answer([1, 2])},
        "is a list, not a JSON object",
    ),
    "endless nesting": (
        lambda s: {f"{API}/registered-models/alias": raw_answer(b"[" * 200_000)},
        "nested too deeply",
    ),
    "not JSON": (
        lambda s: {f"{API}/model-versions/get-download-uri": raw_answer(b"{oops")},
        "not JSON",
    ),
    "NUL in a file name": (
        lambda s: {ART: json_answer({"files": [{"path": "b/model\0.onnx", "is_dir": False}]})},
        "not a plain file name",
    ),
    "path traversal name": (
        lambda s: {ART: json_answer({"files": [{"path": "..", "is_dir": False}]})},
        "not a plain file name",
    ),
    "listing not a list": (lambda s: {ART: json_answer({"files": "model.onnx"})}, "malformed"),
    "endless folder nesting": (
        lambda s: {ART: json_answer({"files": [{"path": "b/d", "is_dir": True}]})},
        "nested deeper",
    ),
    "truncated download": (
        lambda s: {f"{BUNDLE_FILE}/model.onnx": stalling_file((s / "model.onnx").read_bytes(),
                                                               500, 0.0)},
        "truncated",
    ),
    "tampered model": (
        lambda s: {f"{BUNDLE_FILE}/model.onnx": raw_answer((s / "model.onnx").read_bytes()
                                                           + b"x")},
        "sha256 mismatch",
    ),
    "NaN threshold": (
        lambda s: {f"{BUNDLE_FILE}/manifest.json": raw_answer(_nan_manifest(s))},
        "'threshold.value' is not a finite number",
    ),
    "Infinity threshold": (
        lambda s: {f"{BUNDLE_FILE}/manifest.json": raw_answer(_inf_manifest(s))},
        "'threshold.value' is not a finite number",
    ),
    "file:// artifact URI, no run to read it through": (
        lambda s: {f"{API}/model-versions/get-download-uri": json_answer(
            {"artifact_uri": s.as_uri()})},
        "no 'model_version.run_id'",
    ),
    "file:// artifact URI outside its run's artifacts": (
        lambda s: {f"{API}/model-versions/get-download-uri": json_answer(
                       {"artifact_uri": s.as_uri()}),
                   f"{API}/model-versions/get": json_answer(
                       {"model_version": {"version": "1", "run_id": "abc"}}),
                   f"{API}/artifacts/list": json_answer(
                       {"root_uri": "file:///srv/mlruns/1/abc/artifacts", "files": []})},
        "is not under its run's artifacts",
    ),
    "HTTP 404": (
        lambda s: {f"{API}/registered-models/alias": json_answer({"message": "no alias"}, 404)},
        "HTTP 404: no alias",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_registry_answer_is_one_clear_error(source, installed, name):
    overrides, needle = CASES[name]
    before = _snapshot(installed)
    routes = {**registry_routes(source), **overrides(source)}
    with hostile_registry(routes) as reg:
        with pytest.raises(PullError) as info:
            pull("models:/m@champion", installed, tracking_uri=reg.uri, retries=0)
    message = str(info.value)
    assert needle in message and "\n" not in message, message
    assert _snapshot(installed) == before  # the old bundle is untouched
    assert _leftovers(installed) == []  # no temp folder beside it


def test_cli_pull_errors_are_one_line_without_traceback(source, installed):
    routes = {**registry_routes(source),
              f"{API}/registered-models/alias": json_answer([])}  # fmt: skip
    with hostile_registry(routes) as reg:
        result = run_cli("pull", "--model-uri", "models:/m@champion", "--out", str(installed),
                         "--tracking-uri", reg.uri, "--retries", "0")  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert load_bundle(installed).threshold == 9.0


def test_healthy_registry_still_installs(source, installed):
    with hostile_registry(registry_routes(source)) as reg:
        info = pull("models:/m@champion", installed, tracking_uri=reg.uri, retries=0)
    assert info["model_sha256"] == sha256_file(source / "model.onnx")
    assert load_bundle(installed).threshold == 2.5 and _leftovers(installed) == []
    # file:// is accepted only when asked for explicitly
    routes = {**registry_routes(source),
              f"{API}/model-versions/get-download-uri": json_answer(
                  {"artifact_uri": source.as_uri()})}  # fmt: skip
    with hostile_registry(routes) as reg:
        info = pull("models:/m/1", installed, tracking_uri=reg.uri, retries=0, allow_local=True)
    assert info["artifact_uri"] == source.as_uri()


def test_out_folder_with_user_files_is_refused(source, tmp_path):
    out = tmp_path / "work"
    out.mkdir()
    for k in range(13):
        (out / f"notes{k}.txt").write_text(f"user file {k}")
    with hostile_registry(registry_routes(source)) as reg:
        with pytest.raises(PullError, match="13 entries that are not a bundle"):
            pull("models:/m@champion", out, tracking_uri=reg.uri, retries=0)
        (tmp_path / "afile").write_text("x")
        with pytest.raises(PullError, match="not a folder"):
            pull("models:/m@champion", tmp_path / "afile", tracking_uri=reg.uri, retries=0)
        empty = tmp_path / "empty"
        empty.mkdir()
        pull("models:/m@champion", empty, tracking_uri=reg.uri, retries=0)
    assert sorted(p.name for p in out.iterdir()) == [f"notes{k}.txt" for k in sorted(
        range(13), key=str)]  # fmt: skip
    assert (tmp_path / "afile").read_text() == "x"
    assert load_bundle(empty).threshold == 2.5


def test_size_cap_refuses_before_holding_the_file(source, installed):
    big = (source / "model.onnx").read_bytes() * 2000  # ~1-2 MB
    routes = {**registry_routes(source), f"{BUNDLE_FILE}/model.onnx": raw_answer(big)}
    with hostile_registry(routes) as reg:
        with pytest.raises(PullError, match="would exceed the 65536-byte limit"):
            pull("models:/m@champion", installed, tracking_uri=reg.uri, retries=0,
                 max_bytes=65536)  # fmt: skip

        def no_length(handler) -> None:  # no Content-Length: the cap must hit while streaming
            handler.send_response(200)
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(big)
            handler.close_connection = True

        reg.routes[f"{BUNDLE_FILE}/model.onnx"] = no_length
        with pytest.raises(PullError, match="download exceeds the 65536-byte limit"):
            pull("models:/m@champion", installed, tracking_uri=reg.uri, retries=0,
                 max_bytes=65536)  # fmt: skip
    assert load_bundle(installed).threshold == 9.0 and _leftovers(installed) == []


def _start_stalled_pull(reg_uri: str, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "granvae_edge", "pull", "--model-uri", "models:/m@champion",
           "--out", str(out), "--tracking-uri", reg_uri, "--retries", "0"]  # fmt: skip
    return subprocess.Popen(cmd, env=edge_env(), stderr=subprocess.PIPE, text=True)


def _wait_for_partial(out: Path, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tmp in out.parent.glob(f".{out.name}.pull-*"):
            if (tmp / "model.onnx").exists():
                return tmp
        time.sleep(0.05)
    raise AssertionError("the pull never started writing model.onnx")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_pull_leaves_nothing_behind_after_the_next_pull(source, installed, sig):
    data = (source / "model.onnx").read_bytes()
    routes = {**registry_routes(source),
              f"{BUNDLE_FILE}/model.onnx": stalling_file(data, 200, 30.0)}  # fmt: skip
    before = _snapshot(installed)
    with hostile_registry(routes) as reg:
        proc = _start_stalled_pull(reg.uri, installed)
        try:
            partial = _wait_for_partial(installed)
            proc.send_signal(sig)
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        assert _snapshot(installed) == before
        if sig == signal.SIGTERM:  # unwinds: cleans up after itself at once
            assert _leftovers(installed) == [] and "Traceback" not in proc.stderr.read()
        else:  # SIGKILL cannot be caught: the half download stays until the next pull
            assert partial.exists()
        reg.routes.update(registry_routes(source))  # the registry heals
        pull("models:/m@champion", installed, tracking_uri=reg.uri, retries=0)
    assert _leftovers(installed) == []
    assert load_bundle(installed).threshold == 2.5


def test_concurrent_pull_folder_is_not_removed(source, installed):
    """Cleanup removes only dead pulls' folders: a live pull's folder holds an flock."""
    data = (source / "model.onnx").read_bytes()
    routes = {**registry_routes(source),
              f"{BUNDLE_FILE}/model.onnx": stalling_file(data, 200, 30.0)}  # fmt: skip
    with hostile_registry(routes) as reg:
        proc = _start_stalled_pull(reg.uri, installed)
        try:
            partial = _wait_for_partial(installed)
            from granvae_edge.pull import clean_stale

            assert clean_stale(installed) == [] and partial.exists()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    assert _leftovers(installed) == []
