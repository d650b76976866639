"""The README's "After the main job" commands, as written, against what a retrain leaves.

A newcomer ran `make run`, then the README's block: `granvae ui`, `granvae promote`, and
`granvae-edge pull ... --out bundle`. The pull failed three ways (no granvae-edge in .venv,
no tracking URI, the embedded store's `file://` source refused). Here a tiny retrain runs
on the embedded store (sqlite in the project folder, as `make run`), `granvae ui` serves it,
and the README's own pull line, read from README.md, must install a verified bundle whose
model is the registered one. Only the UI's port differs from the README (a free one).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import free_port
from pipeline_fixtures import ONE_CANDIDATE

from granvae.config import merge

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow



def readme_line(command: str) -> str:
    """The README's line of the after-the-main-job block that starts with `command`."""
    block = (ROOT / "README.md").read_text().split("## After the main job", 1)[1]
    block = block.split("```bash", 1)[1].split("```", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith(command)]
    assert len(lines) == 1, f"README block has {len(lines)} `{command}` lines"
    return lines[0].split("  #", 1)[0].strip()


def _env(prefect_api: str) -> dict[str, str]:
    """A shell after `. .venv/bin/activate`: .venv/bin first, no tracking URI set."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{cmd}: {out.stdout[-3000:]}{out.stderr[-3000:]}"
    return out


def _wait_http(url: str, proc: subprocess.Popen, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        assert proc.poll() is None, "granvae ui exited"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(1)


def test_readme_pull_works_after_a_retrain(tmp_path, prefect_harness):
    project = tmp_path / "granvae"
    project.mkdir()
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), ONE_CANDIDATE)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = _env(prefect_harness)
    _run([str(BIN / "granvae"), "retrain", "--data-repo", "runs/demo/data-repo",
          "--set", "pipeline.work_dir=runs/demo/retrain"], project, env)  # fmt: skip

    port = free_port()
    log = open(tmp_path / "ui.log", "wb")
    ui = shlex.split(readme_line("granvae ui")) + ["--port", str(port)]
    proc = subprocess.Popen(ui, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc)
        _run(shlex.split(readme_line("granvae promote")), project, env)
        pull = readme_line("granvae-edge pull").replace(":5000", f":{port}")
        info = json.loads(_run(shlex.split(pull), project, env).stdout)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()

    assert info["version"] == "1" and info["artifact_uri"].startswith("file://")
    bundle = project / "bundle"
    registered = Path(info["artifact_uri"].removeprefix("file://")) / "model.onnx"
    digest = hashlib.sha256((bundle / "model.onnx").read_bytes()).hexdigest()
    assert digest == info["model_sha256"] == hashlib.sha256(registered.read_bytes()).hexdigest()
    _run([str(BIN / "granvae-edge"), "verify", str(bundle)], project, env)


def test_readme_pull_names_the_server_granvae_ui_starts() -> None:
    """The pull line and the UI line agree on the address (the UI's default port)."""
    assert re.search(r"--tracking-uri http://127\.0\.0\.1:5000\b", readme_line("granvae-edge pull"))
    assert readme_line("granvae ui") == "granvae ui"
