"""The retrain's results as the data repository's pipeline outputs, locked and committed.

Why: the flow runs the same granvae calls as dvc.yaml's stages, but elsewhere (its work
folder, Prefect tasks), so the data repository used to keep a dvc.yaml with no dvc.lock:
`dvc status` there called every stage changed and `dvc metrics diff HEAD~1` had no old
values. Here the flow's own results are put where the stages would have written them
(runs/dvc/...), then versioning.lock_pipeline records them in dvc.lock, pushes them and
commits, so after each retrain `dvc status` is clean and the retrain commits carry each
version's metrics. Nothing is recomputed: the files are the ones the flow registered.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from pipelines import stages, versioning

DECISION_FILES = ("decision.csv", "decision.md")  # granvae.select.write_decision's outputs
OUTPUTS = (stages.PREPARED, stages.SWEEP, stages.DECISION, stages.BUNDLE, stages.METRICS,
           stages.LEADERBOARD)  # fmt: skip


def declared_outputs(dvc_yaml: Path) -> set[str]:
    """Every path a dvc.yaml's stages write (outs, metrics, plots); empty if unreadable."""
    try:
        doc: Any = yaml.safe_load(dvc_yaml.read_text())
    except (OSError, yaml.YAMLError):
        return set()
    found: set[str] = set()
    for stage in ((doc or {}).get("stages") or {}).values():
        for kind in ("outs", "metrics", "plots"):
            for entry in (stage or {}).get(kind) or []:
                found.add(str(next(iter(entry)) if isinstance(entry, dict) else entry))
    return found


def writes_our_outputs(repo: Path) -> bool:
    """True when the data repo's dvc.yaml (ours, or a user's copy of it) declares exactly
    the outputs record_retrain writes: only then can the flow's results stand for them."""
    return declared_outputs(repo / "dvc.yaml") == {p.as_posix() for p in OUTPUTS}


def _write_prepared(repo: Path, snapshot: str, data_version: str) -> None:
    """runs/dvc/prepare.json as the prepare stage writes it (relative snapshot path)."""
    from granvae.data import check_dataset

    summary = check_dataset(repo / snapshot)
    record = {"data_version": data_version, "snapshot": snapshot, "check": summary}
    text = json.dumps(record, indent=2, default=str).replace(str(repo / snapshot), snapshot)
    (repo / stages.PREPARED).write_text(text)


def _repoint_sweep(repo: Path, snapshot: str) -> None:
    """The copied sweep.json names the snapshot relative to where the copy lies (the flow's
    sweep names it relative to the work folder's sweep): `granvae report runs/dvc/sweep`
    works in the data repository wherever it is moved."""
    path = repo / stages.SWEEP / "sweep.json"
    if path.is_file():
        meta = json.loads(path.read_text())
        meta["data_dir"] = os.path.relpath(repo / snapshot, repo / stages.SWEEP)
        path.write_text(json.dumps(meta, indent=2))


def _write_decision(repo: Path, sweep_dir: Path, winner: str, why: str) -> None:
    """runs/dvc/decision: the flow's decision.csv/.md plus winner.json, as select writes."""
    folder = repo / stages.DECISION
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in DECISION_FILES:
        shutil.copy2(sweep_dir / name, folder / name)
    stages.write_winner(folder, winner, why)


def record_retrain(
    repo: Path,
    snapshot: str,
    data_version: str,
    sweep_dir: Path,
    bundle_dir: Path,
    decision: tuple[str, str],
    message: str,
    remote_name: str = "storage",
) -> bool:
    """Put one retrain's outputs under runs/dvc, `dvc commit` + push them, git commit the
    lock; False when the data repo's dvc.yaml declares other outputs (a user's own
    pipeline: its stages are not ours) or when nothing changed since the last retrain."""
    repo = repo.resolve()
    if not writes_our_outputs(repo):
        return False
    (repo / stages.OUT).mkdir(parents=True, exist_ok=True)
    _write_prepared(repo, snapshot, data_version)
    versioning.replace_folder(sweep_dir, repo / stages.SWEEP)
    _repoint_sweep(repo, snapshot)
    _write_decision(repo, sweep_dir, *decision)
    versioning.replace_folder(bundle_dir, repo / stages.BUNDLE)
    stages.collect_metrics(sweep_dir, repo / stages.METRICS, repo / stages.LEADERBOARD)
    tracked = [stages.PREPARED, stages.DECISION, stages.METRICS, stages.LEADERBOARD]
    gitignore = stages.OUT / ".gitignore"  # dvc commit lists the cached outs there
    paths = [p.as_posix() for p in (*tracked, gitignore)]
    return versioning.lock_pipeline(repo, paths, message, remote_name)
