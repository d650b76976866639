"""A project folder moved after a retrain (`mv ~/proj ~/proj2`) keeps working in its new place.

Before: mlflow.db kept absolute `file:///old/...` locations (the edge pull through `granvae ui`
found no bundle, a rerun silently recreated the old folder and wrote its artifacts there), the
data repository's DVC remote was an absolute path (`dvc pull` failed), and sweep.json named its
data by absolute path (`granvae export SWEEP` failed). Here a real tiny retrain (real Prefect
flow, embedded sqlite MLflow, real git + DVC) runs in a project folder, the folder is moved,
and the README's commands run from the new place. The old folder must not come back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import free_port
from pipeline_fixtures import ONE_CANDIDATE, dvc

from granvae.config import merge
from granvae.tracking.relocate import LOCATIONS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(prefect_api: str) -> dict[str, str]:
    """A shell after `. .venv/bin/activate`, on the embedded store (no tracking URI)."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{cmd}: {out.stdout[-3000:]}{out.stderr[-3000:]}"
    return out


def _locations(db: Path) -> list[str]:
    """Every artifact location the store keeps (the columns relocate rewrites)."""
    conn = sqlite3.connect(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        found = []
        for table, column, where in LOCATIONS:
            if table in tables:
                sql = f"SELECT {column} FROM {table} WHERE 1=1 {where}"  # noqa: S608
                found += [r[0] for r in conn.execute(sql) if r[0]]
        return found
    finally:
        conn.close()


def _ui(project: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    handle = open(log, "wb")
    proc = subprocess.Popen([str(BIN / "granvae"), "ui", "--port", str(port)], cwd=project,
                            env=env, stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(1)


@pytest.mark.slow
def test_a_moved_project_keeps_working(tmp_path, prefect_harness):
    old = tmp_path / "proj"
    old.mkdir()
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), ONE_CANDIDATE)
    (old / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = _env(prefect_harness)
    _run([str(BIN / "granvae"), "retrain", "--data-repo", "runs/demo/data-repo",
          "--set", "pipeline.work_dir=runs/demo/retrain"], old, env)  # fmt: skip
    assert any(loc.startswith(old.as_uri() + "/") for loc in _locations(old / "mlflow.db"))

    new = tmp_path / "moved" / "proj2"
    new.parent.mkdir()
    shutil.move(old, new)

    # The store notices the move once, says so, and lists the version.
    shown = _run([str(BIN / "granvae"), "models"], new, env)
    assert f"project moved from {old} to {new}: rewrote" in shown.stderr
    assert "granvae-inspector (1 version)" in shown.stdout
    locations = _locations(new / "mlflow.db")
    assert not [loc for loc in locations if str(old) in loc], locations
    assert any(loc.startswith(new.as_uri() + "/mlartifacts/") for loc in locations)

    # The README's pull: the registered bundle, read through `granvae ui` from the new place.
    proc, url = _ui(new, env, tmp_path / "ui.log")
    try:
        promoted = _run([str(BIN / "granvae"), "promote"], new, env)
        assert "project moved" not in promoted.stderr  # rewritten once, not on every open
        pulled = _run([str(BIN / "granvae-edge"), "pull", "--model-uri",
                       "models:/granvae-inspector@champion", "--out", "bundle",
                       "--tracking-uri", url], new, env)  # fmt: skip
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    info = json.loads(pulled.stdout)
    assert info["version"] == "1" and info["artifact_uri"].startswith(new.as_uri())
    assert (new / "bundle" / "model.onnx").is_file()  # pull verifies what it installs

    # sweep.json names its data relative to itself: `granvae export SWEEP` finds it.
    (sweep,) = (new / "runs" / "demo" / "retrain" / "sweeps").iterdir()
    assert not Path(json.loads((sweep / "sweep.json").read_text())["data_dir"]).is_absolute()
    _run([str(BIN / "granvae"), "export", str(sweep), "--out", str(tmp_path / "exported")],
         new, env)  # fmt: skip
    assert (tmp_path / "exported" / "model.onnx").is_file()

    # The data repository's remote is relative: status in sync, a pull from scratch works.
    repo = new / "runs" / "demo" / "data-repo"
    assert "in sync" in dvc(repo, "status", "-c")
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data" / "snapshot")
    dvc(repo, "pull")
    assert (repo / "data" / "snapshot" / "manifest.json").is_file()
    assert dvc(repo, "status").strip() == "Data and pipelines are up to date."

    assert not old.exists()  # nothing wrote into the old place


def test_relocation_rewrites_only_paths_under_the_old_folder(tmp_path, monkeypatch):
    """Locations elsewhere (a sibling whose name starts like the project's, another
    folder, a server's mlflow-artifacts:/) are left alone; a store not moved is not touched."""
    from granvae.tracking import Store, TrackingSettings

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the embedded store
    old, new = tmp_path / "my proj", tmp_path / "proj renamed"  # URIs percent-encode spaces
    store = Store(TrackingSettings(workdir=old, uri=None))
    own = store.experiment_id("granvae")
    sibling = (tmp_path / "my proj2" / "mlartifacts" / "x").as_uri()
    elsewhere = (tmp_path / "elsewhere").as_uri()
    store.client.create_experiment("sibling", sibling)
    store.client.create_experiment("elsewhere", elsewhere)
    store.client.create_experiment("served", "mlflow-artifacts:/served")
    run = store.client.create_run(own)
    before = sorted(_locations(old / "mlflow.db"))
    Store(TrackingSettings(workdir=old))  # opened again in place: nothing rewritten
    assert sorted(_locations(old / "mlflow.db")) == before

    shutil.move(old, new)
    moved = Store(TrackingSettings(workdir=new))
    assert (
        moved.client.get_experiment(own).artifact_location
        == (new / "mlartifacts" / "granvae").as_uri()
    )
    assert moved.client.get_run(run.info.run_id).info.artifact_uri.startswith(new.as_uri() + "/")
    after = _locations(new / "mlflow.db")
    assert {sibling, elsewhere, "mlflow-artifacts:/served"} <= set(after)
    assert not [loc for loc in after if loc.startswith(old.as_uri() + "/")]


def test_an_absolute_default_remote_becomes_relative_on_the_next_retrain(tmp_path):
    """Data repositories made before the remote was relative get it at their next retrain
    (ensure_repo), so the move after that keeps `dvc pull` working."""
    from configobj import ConfigObj

    from pipelines import versioning

    repo = tmp_path / "proj" / "data-repo"
    versioning.ensure_repo(repo, None)
    remote = versioning.default_remote(repo)
    dvc(repo, "remote", "add", "--force", "storage", str(remote))  # as older granvae wrote it
    config = repo / ".dvc" / "config"
    assert ConfigObj(str(config))['remote "storage"']["url"] == str(remote)
    versioning.ensure_repo(repo, None)
    assert ConfigObj(str(config))['remote "storage"']["url"] == "../../data-repo-dvc-remote"
    user_remote = str(tmp_path / "elsewhere")
    versioning.ensure_repo(repo, user_remote)  # a remote the user names stays as given
    assert ConfigObj(str(config))['remote "storage"']["url"] == user_remote
