"""The read-only registry commands start without torch.

`granvae models` / `promote` / `rollback` only read params.yaml and talk to MLflow; torch
cost them ~2 s of a 2-core box's start-up (benchmarks/cli_startup.py) when granvae.config
imported the model classes. Each command runs here as a user runs it: the real console
entry point in a fresh interpreter, on a real embedded MLflow store holding a registered
version. The interpreter then reports which heavy packages it imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sweep_fixtures import make_sweep

from granvae.select import load_rows, select
from granvae.tracking import Store, TrackingSettings, register_winner

NAME = "line-s-inspector"
# granvae's console script, then what it imported: printed even when the command exits.
PROBE = """
import json, sys
from granvae.cli import main
sys.argv = ["granvae", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as done:
    code = done.code
heavy = [m for m in ("torch", "sklearn", "scipy.stats") if m in sys.modules]
print("PROBE " + json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project folder: params.yaml naming the model, an embedded store with version 1."""
    root = tmp_path_factory.mktemp("startup") / "line-s"
    root.mkdir()
    tracking = {"model_name": NAME, "experiment": "line-s"}
    (root / "params.yaml").write_text(yaml.safe_dump({"tracking": tracking}))
    sweep = make_sweep(root / "sweep")
    store = Store(TrackingSettings(workdir=root, **tracking))
    assert register_winner(sweep, select(load_rows(sweep)), NAME, store=store) == 1
    return root


def granvae(project: Path, *args: str) -> tuple[dict, str]:
    """(what the probe reported, the command's own output)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = done.stdout.splitlines()
    probe = [ln for ln in lines if ln.startswith("PROBE ")]
    assert probe, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(probe[-1][6:]), "\n".join(lines) + done.stderr


def test_registry_commands_do_not_import_torch(project):
    report, out = granvae(project, "models")
    assert report["code"] == 0, out
    assert f"{NAME} (1 version)" in out and "challenger" in out  # it really read the store
    assert report["heavy"] == [], f"`granvae models` imported {report['heavy']}"

    report, out = granvae(project, "promote", "--reason", "startup test", "--user", "ci")
    assert report["code"] == 0 and "champion is now version 1" in out, out
    assert "torch" not in report["heavy"], "`granvae promote` imported torch"

    report, out = granvae(project, "rollback")
    assert report["code"] == 2 and "no previous champion" in out, out  # refused, read only
    assert "torch" not in report["heavy"], "`granvae rollback` imported torch"

    report, out = granvae(project, "--help")
    assert report["code"] == 0 and "models" in out
    assert report["heavy"] == []
