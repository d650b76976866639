"""Shared by `python -m pipelines ...` and `granvae retrain|schedule` (cli_pipeline.py).

Flags become overrides of the params tree, so the flow sees one merged config whichever
way it was started (CLI, schedule, test).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from granvae.config import SettingsError, merge
from granvae.param_keys import parse_sets as _parse_sets


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """`train.epochs=1` -> {"train": {"epochs": 1}}; values are parsed as YAML."""
    return _parse_sets(items)[0]


def flag_overrides(
    landing: str | None = None, data_repo: str | None = None, dask_address: str | None = None
) -> dict[str, Any]:
    """The typed flags as a partial params tree (`pipeline:` keys)."""
    flags = {"landing": landing, "data_repo": data_repo, "dask": dask_address}
    pipeline = {k: v for k, v in flags.items() if v is not None}
    return {"pipeline": pipeline} if pipeline else {}


def build_overrides(
    landing: str | None = None,
    data_repo: str | None = None,
    dask_address: str | None = None,
    sets: list[str] | None = None,
) -> dict[str, Any]:
    """Flags and --set items as one tree: what the flow (a Prefect parameter) receives."""
    return merge(flag_overrides(landing, data_repo, dask_address), parse_sets(sets))


def describe(summary: dict[str, Any]) -> str:
    """The lines the README promises at the end of a retrain."""
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in summary["metrics"].items())
    promo = summary.get("promotion") or {}
    lines = [
        f"challenger: {summary['model_name']} version {summary['version']} "
        f"(candidate {summary['winner']})",
        f"metrics: {metrics}",
        f"data version: {summary['data_version']}",
        f"bundle: {summary['bundle']}  [{summary['verify']}]",
        f"report: {summary.get('report') or '-'}",
        f"registered version: {summary['links']['version']}",
        f"training runs: {summary['links'].get('runs', '-')}",
        f"MLflow UI: {summary['ui']}",
        f"store: {summary.get('tracking_uri', '-')}",
    ]
    if promo:
        lines.append(f"auto-promotion: {promo['reason']}")
    return "\n".join(lines)


def _checked(
    params: str | None,
    profile: str | None,
    landing: str | None,
    data_repo: str | None,
    dask_address: str | None,
    sets: list[str] | None,
) -> dict[str, Any]:
    """Check everything before anything starts (a typo fails here, naming its --set item
    or file, not at 2 a.m.); return the overrides the flow receives."""
    from pipelines.config import load_run_config

    load_run_config(params, profile, flag_overrides(landing, data_repo, dask_address), sets)
    try:
        return build_overrides(landing, data_repo, dask_address, sets)
    except ValueError as err:
        raise SettingsError(str(err)) from None


def enter_project(*paths: str | None) -> list[str | None]:
    """Run from the project folder (found walking up, granvae.project) so that its
    params.yaml, its work folder and its MLflow store are the ones used, whatever
    subfolder the command started in; paths the user typed are made absolute first."""
    from granvae.project import find_project

    here = Path.cwd().resolve()
    root = find_project(here)
    if root is None or root == here:
        return list(paths)
    fixed = [str(Path(p).resolve()) if p else None for p in paths]
    print(f"project: {root} (found above {here}); running there", file=sys.stderr, flush=True)
    os.chdir(root)
    return fixed


def retrain_main(
    params: str | None,
    profile: str | None,
    landing: str | None,
    data_repo: str | None,
    dask_address: str | None,
    sets: list[str] | None,
) -> dict[str, Any]:
    from pipelines.config import load_run_config
    from pipelines.interrupt import stop_on_interrupt
    from pipelines.progress import retrain_progress
    from pipelines.runtime import prestart

    params, landing, data_repo = enter_project(params, landing, data_repo)
    overrides = _checked(params, profile, landing, data_repo, dask_address, sets)
    run = load_run_config(params, profile, overrides)
    work = run.pipeline.work_dir
    with stop_on_interrupt(work), retrain_progress(work):  # Ctrl-C: stop all, say how to resume
        prestart()  # the API boots while torch and granvae import
        from pipelines.flow import run_retrain

        summary = run_retrain(params, profile, overrides)
    print(describe(summary), flush=True)
    return summary


def schedule_main(
    cron: str,
    params: str | None,
    profile: str | None,
    landing: str | None = None,
    data_repo: str | None = None,
    dask_address: str | None = None,
    sets: list[str] | None = None,
) -> None:
    """Check the config now (a bad option fails here, not at 2 a.m.), then serve."""
    from pipelines.runtime import prestart

    params, landing, data_repo = enter_project(params, landing, data_repo)
    overrides = _checked(params, profile, landing, data_repo, dask_address, sets)
    prestart()
    from pipelines.schedule import serve

    print(f"serving the retrain flow on cron {cron!r} (Ctrl-C stops)", flush=True)
    serve(cron, params, profile, overrides)
