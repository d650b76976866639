"""`python -m pipelines.stages <stage>`: the retrain flow as plain DVC stages (dvc.yaml).

Same granvae calls as the Prefect tasks, no Prefect: `dvc repro` rebuilds a model from a
commit's snapshot and params.yaml alone. Inside `dvc repro` DVC itself holds the repo
lock, so the data version is read from the committed .dvc file and git here, not through
dvc.api (which would wait on that lock).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import load_run_config

OUT = Path("runs/dvc")
SWEEP = OUT / "sweep"
DECISION = OUT / "decision"
BUNDLE = OUT / "bundle"
PREPARED = OUT / "prepare.json"
METRICS = OUT / "metrics.json"
LEADERBOARD = OUT / "leaderboard.csv"
WINNER = "winner.json"  # in DECISION
METRIC_KEYS = ("elbo", "recall_at_far", "image_auroc", "pixel_auroc", "latency_p95_b1_ms")


def data_version(snapshot: str) -> str:
    """ "<git sha>:<dvc md5>" from the committed .dvc file (as the flow records it)."""
    dvc_file = Path(f"{snapshot}.dvc")
    md5 = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"].removesuffix(".dir")
    cmd = ["git", "log", "-n", "1", "--format=%h", "--abbrev=10", "--", str(dvc_file)]
    sha = subprocess.run(cmd, capture_output=True, text=True).stdout.strip() or "uncommitted"
    return f"{sha}:{md5}"


def prepare(params: str | None) -> None:
    """Verify every shard of the snapshot before anything trains on it."""
    from granvae.data import check_dataset

    run = load_run_config(params)
    snapshot = run.pipeline.snapshot
    summary = check_dataset(snapshot)
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"data_version": data_version(snapshot), "snapshot": snapshot, "check": summary}
    PREPARED.write_text(json.dumps(record, indent=2, default=str))


def sweep(params: str | None) -> None:
    from granvae.sweep import run_sweep

    run = load_run_config(params)
    version = json.loads(PREPARED.read_text())["data_version"]
    run_sweep(run.settings, run.pipeline.snapshot, SWEEP, progress=False, data_version_id=version)


def collect_metrics(sweep_dir: Path, metrics: Path, leaderboard: Path) -> None:
    """A sweep's per-candidate numbers as metrics.json + a plot table (what `dvc metrics
    show` / `dvc plots show` read); the retrain flow writes the same files into the data
    repository, so both show the last retrain."""
    import pandas as pd

    from granvae.select import load_rows

    rows = load_rows(sweep_dir)
    done = [r for r in rows if r.get("status") == "finished"]
    out: dict[str, Any] = {"n_candidates": len(rows), "n_finished": len(done)}
    out["candidates"] = {
        r["candidate_id"]: {k: r.get(k) for k in METRIC_KEYS if r.get(k) is not None} for r in done
    }
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(out, indent=2))
    cols = ["candidate_id", "granularity", "beta", "latent_dim", "seed", *METRIC_KEYS]
    pd.DataFrame(done).reindex(columns=cols).to_csv(leaderboard, index=False)


def evaluate(params: str | None) -> None:
    collect_metrics(SWEEP, METRICS, LEADERBOARD)


def write_winner(folder: Path, winner: str | None, why: str) -> None:
    """winner.json: what the export stage reads (the flow writes the same in the data repo)."""
    (folder / WINNER).write_text(json.dumps({"winner": winner, "why": why}, indent=2))


def select(params: str | None) -> None:
    from granvae.select import SelectionPolicy, load_rows, load_scores, write_decision
    from granvae.select import select as choose

    run = load_run_config(params)
    rows = load_rows(SWEEP)
    policy = SelectionPolicy.model_validate(run.settings.select)
    decision = choose(rows, policy, load_scores(SWEEP, rows))
    DECISION.mkdir(parents=True, exist_ok=True)
    write_decision(decision, DECISION)
    write_winner(DECISION, decision.winner, decision.why)
    if decision.winner is None:
        sys.exit(f"no candidate passed the gates: {decision.why}")


def export(params: str | None) -> None:
    from pipelines.bundle import export_winner, verify_bundle

    run = load_run_config(params)
    winner = json.loads((DECISION / WINNER).read_text())["winner"]
    export_winner(SWEEP, winner, BUNDLE, dict(run.settings.export))
    print(verify_bundle(BUNDLE))


STAGES = {
    "prepare": prepare,
    "sweep": sweep,
    "evaluate": evaluate,
    "select": select,
    "export": export,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.stages")
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--params", default=None, help="default: ./params.yaml")
    args = parser.parse_args(argv)
    STAGES[args.stage](args.params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
