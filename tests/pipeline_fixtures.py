"""Helpers for the pipeline tests: tiny params, projects, landing folders, registry reads.

Tiny means: 32x32 surfaces, a few hundred images, 1 epoch, latent_dim 4, two candidates,
cheap evaluation settings. Every service is real: git, DVC with a local remote, MLflow
(the session `mlflow_server`), Prefect (the session `prefect_harness`).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from granvae.config import merge
from granvae.data import generate
from granvae.data.to_folder import write_mvtec

ROOT = Path(__file__).resolve().parents[1]

# One candidate that trains in seconds; every other setting as the project's params.yaml has it.
ONE_CANDIDATE = {
    "data": {"source": "surfaces", "n_train": 128, "n_val": 100, "n_test": 64,
             "image_size": 32, "seed": 0},
    "model": {"latent_dim": 4, "hidden": 64},
    "sweep": {"granularities": [2], "betas": [4.0], "seeds": [0]},
    "train": {"epochs": 1, "batch_size": 64},
    "evaluation": {"iwae_k": 4, "iwae_images": 16, "latency_repeats": 2,
                   "disentanglement": False, "score_alternatives": []},  # rule choice: own tests
    "select": {"gates": [{"metric": "status", "op": "==", "value": "finished"}]},
    "pipeline": {"max_workers": 1, "retries": 1, "retry_delay_s": 0.5},
}  # fmt: skip


def tiny_params(root: Path, tracking_uri: str, **sections: Any) -> dict[str, Any]:
    """The project's params.yaml shrunk to two candidates that train in seconds."""
    name = f"pipe-{uuid.uuid4().hex[:8]}"
    base = merge(copy.deepcopy(ONE_CANDIDATE), {  # tests may edit lists in place
        "sweep": {"granularities": [1, 2]},
        "tracking": {"uri": tracking_uri, "model_name": name, "experiment": name},
        "pipeline": {"data_repo": str(root / "project"), "snapshot": "data/snapshot",
                     "work_dir": str(root / "work"), "max_workers": 2},
    })  # fmt: skip
    project = yaml.safe_load((ROOT / "params.yaml").read_text())  # every section dvc.yaml names
    return merge(merge(project, base), sections)


def write_params(path: Path, params: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def make_project(root: Path, params: dict[str, Any]) -> Path:
    """A project working copy: dvc.yaml + params.yaml, not yet a git repo (the flow inits)."""
    project = root / "project"
    project.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    write_params(project / "params.yaml", params)
    return project


def landing_folder(root: Path, seed: int, n_train: int = 140, size: int = 32) -> Path:
    """New images as the line delivers them: an MVTec-style folder of PNGs."""
    splits, meta = generate("surfaces", n_train, 0, 48, seed, image_size=size)
    return write_mvtec(root / f"landing-{seed}", splits, meta)


def truncate_png(path: Path) -> None:
    """Keep the header and half the data: a file a camera PC crashed while writing."""
    data = path.read_bytes()
    path.write_bytes(data[: max(60, len(data) // 2)])


def tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder -> (size, mtime_ns): 'unchanged' is a dict comparison."""
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def versions(params: dict[str, Any]) -> list[dict[str, Any]]:
    from granvae.tracking import Store, TrackingSettings, list_versions

    cfg = TrackingSettings(**params["tracking"])
    return list_versions(cfg.model_name, store=Store(cfg))


def aliases(params: dict[str, Any]) -> dict[str, int]:
    from granvae.tracking import Store, TrackingSettings
    from granvae.tracking.registry import aliases as read_aliases

    cfg = TrackingSettings(**params["tracking"])
    return read_aliases(Store(cfg), cfg.model_name)


def dvc(cwd: Path, *args: str) -> str:
    """The `dvc` CLI beside this interpreter, as a user runs it in the data repository."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout
