"""Shared by `python -m pipelines ...` and `granvae retrain|schedule` (cli_pipeline.py).

Flags become overrides of the params tree, so the flow sees one merged config whichever
way it was started (CLI, schedule, test).
"""

from __future__ import annotations

from typing import Any

import yaml

from granvae.config import merge


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """`train.epochs=1` -> {"train": {"epochs": 1}}; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key.path=value, got {item!r}")
        key, raw = item.split("=", 1)
        node: dict[str, Any] = {}
        leaf = node
        parts = key.strip().split(".")
        for part in parts[:-1]:
            leaf = leaf.setdefault(part, {})
        leaf[parts[-1]] = yaml.safe_load(raw)
        out = merge(out, node)
    return out


def build_overrides(
    landing: str | None = None,
    data_repo: str | None = None,
    dask_address: str | None = None,
    sets: list[str] | None = None,
) -> dict[str, Any]:
    flags = {"landing": landing, "data_repo": data_repo, "dask": dask_address}
    pipeline = {k: v for k, v in flags.items() if v is not None}
    return merge({"pipeline": pipeline} if pipeline else {}, parse_sets(sets))


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
        f"MLflow UI: {summary['ui']}",
    ]
    if promo:
        lines.append(f"auto-promotion: {promo['reason']}")
    return "\n".join(lines)


def retrain_main(
    params: str | None,
    profile: str | None,
    landing: str | None,
    data_repo: str | None,
    dask_address: str | None,
    sets: list[str] | None,
) -> dict[str, Any]:
    from pipelines.config import load_run_config
    from pipelines.runtime import prestart

    overrides = build_overrides(landing, data_repo, dask_address, sets)
    load_run_config(params, profile, overrides)  # a bad option fails before anything starts
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
    from pipelines.config import load_run_config
    from pipelines.runtime import prestart

    overrides = build_overrides(landing, data_repo, dask_address, sets)
    load_run_config(params, profile, overrides)
    prestart()
    from pipelines.schedule import serve

    print(f"serving the retrain flow on cron {cron!r} (Ctrl-C stops)", flush=True)
    serve(cron, params, profile, overrides)
