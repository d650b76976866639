"""The `retrain` flow: new images in, a registered, exported, verified challenger out.

    ingest -> validate -> version (DVC) -> sweep (one task per candidate; each task trains
    AND evaluates, because granvae.sweep.run_candidate does both) -> select -> export +
    verify the ONNX bundle -> register in MLflow (alias challenger) -> optional promotion
    -> the results as the data repository's dvc.lock (committed, pushed: pipelines.datarepo)

Export runs before registration on purpose: `register_winner` uploads the bundle with the
version, so the registered version is complete (ONNX + manifest) or absent, never half.
Orchestration only: every number comes from granvae; this file moves paths and ids.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from granvae.data import DataValidationError
from granvae.export.from_sweep import headline
from granvae.sweep import begin_sweep, candidate_grid, candidate_row
from granvae.tracking.provenance import write_params
from pipelines import artifacts, tasks
from pipelines.config import RunConfig, load_run_config
from pipelines.interrupt import resume_note
from pipelines.runners import make_runner, runner_workers, torch_threads
from pipelines.runtime import shared_api
from pipelines.sweepdir import code_version, sweep_key
from pipelines.trigger import MANUAL, clip


class RetrainRefused(RuntimeError):
    """The flow stopped on purpose (bad data, no candidate passing the gates)."""


def _work(run: RunConfig, *parts: str) -> Path:
    return Path(run.pipeline.work_dir).resolve().joinpath(*parts)


def _data_stage(run: RunConfig) -> dict[str, str]:
    """Ingest + validate into a staging store, then the single DVC writer task."""
    staging = str(_work(run, "staging", "dataset"))
    try:
        tasks.ingest(run.settings, run.pipeline.landing, staging)
        tasks.validate(staging)
    except DataValidationError as err:
        raise RetrainRefused(
            f"data validation failed; nothing was trained, versioned or registered: {err}"
        ) from err
    versioner = tasks.version_data.with_options(
        retries=run.pipeline.retries, retry_delay_seconds=_backoff(run)
    )
    return versioner(staging, run.pipeline, run.resolved())


def _backoff(run: RunConfig) -> list[float]:
    """Exponential retry delays: 1x, 2x, 4x ... the configured base delay."""
    return [run.pipeline.retry_delay_s * 2**i for i in range(max(1, run.pipeline.retries))]


def _run_candidates(
    run: RunConfig, trainer: Any, data_dir: str, sweep_dir: Path, data_version: str
) -> list[dict[str, Any]]:
    """Submit one task per candidate to the flow's runner; gather rows in grid order."""
    settings, code = run.settings, code_version()
    cands = candidate_grid(settings.sweep, settings.model)
    workers = runner_workers(run.pipeline, len(cands))
    begin_sweep(
        settings,
        Path(data_dir),
        sweep_dir,
        cands,
        workers,
        data_version,
        sweep_id=f"retrain-{sweep_dir.name}",
    )
    print(
        f"sweep: {len(cands)} candidates x up to {settings.train.epochs} epochs (early "
        f"stopping may end one sooner), {workers} at a time, in {sweep_dir}",
        file=sys.stderr, flush=True,
    )  # fmt: skip
    note = resume_note(sweep_dir)
    if note:
        print(note, file=sys.stderr, flush=True)
    live = artifacts.live_runs_line(dict(settings.tracking))
    if live:
        print(live, file=sys.stderr, flush=True)
    remote = str(run.pipeline.dask or "").startswith("tcp")
    threads = None if remote else torch_threads(workers)
    shared = (settings, data_dir, str(sweep_dir), threads, data_version, run.digest(), code)
    futures = [trainer.submit(c, i, *shared) for i, c in enumerate(cands)]
    rows = []
    for cand, fut in zip(cands, futures, strict=True):
        try:
            rows.append(fut.result())
        except Exception as err:  # noqa: BLE001 - a lost worker fails its candidate only
            reason = f"task failed: {type(err).__name__}: {err}"
            rows.append(candidate_row(cand, settings, "failed", reason))
    tasks.collect_results(rows, str(sweep_dir))
    return rows


def _warm_workers(run: RunConfig) -> list[Any]:
    """Start local worker processes now so their imports overlap the data stage."""
    if run.pipeline.dask:
        return []
    n = runner_workers(run.pipeline, len(candidate_grid(run.settings.sweep, run.settings.model)))
    return [tasks.warm_up.submit() for _ in range(n)]


def _sweep_stage(run: RunConfig, snap: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """The sweep in a folder named by data + params + code, with persisted, keyed results."""
    key = sweep_key(snap["md5"], run.digest(), code_version())
    sweep_dir = _work(run, "sweeps", key)
    trainer = tasks.train_candidate.with_options(
        result_storage=_work(run, "prefect-results")  # a Path: a local folder, no saved block
    )
    rows = _run_candidates(run, trainer, snap["snapshot"], sweep_dir, snap["data_version"])
    write_params(run.resolved(), sweep_dir)  # logged on the parent run and every version
    return str(sweep_dir), rows


def _ship_stage(
    run: RunConfig, snap: dict, sweep_dir: str, decision: Any, trigger: str
) -> dict[str, Any]:
    """Export + verify the bundle, register it (with why this retrain ran), then maybe promote."""
    pipe, tracking = run.pipeline, dict(run.settings.tracking)
    bundle_dir = str(_work(run, "bundles", Path(sweep_dir).name))
    tasks.export(sweep_dir, decision.winner, bundle_dir, dict(run.settings.export))
    verified = tasks.verify(bundle_dir)
    registrar = tasks.register.with_options(retries=pipe.retries, retry_delay_seconds=_backoff(run))
    reg = registrar(sweep_dir, decision, bundle_dir, snap["data_version"], tracking, trigger)
    promo = None
    if pipe.auto_promote:
        promo = tasks.maybe_promote(
            reg["model_name"], reg["version"], dict(run.settings.select), pipe.compare_metric,
            tracking, run.settings.promotion.model_dump(),
        )  # fmt: skip
    return {**reg, "bundle": bundle_dir, "verify": verified, "promotion": promo}


@flow(name="retrain")
def retrain(
    params: str | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    trigger: str | None = None,
) -> dict[str, Any]:
    """Retrain end to end; returns the challenger version, headline metrics and bundle path.

    `trigger` says why it ran (pipelines.trigger; `manual` when not given) and becomes the tag
    granvae.trigger of the sweep's MLflow runs and of the registered version."""
    log = get_run_logger()
    trigger = clip(trigger or MANUAL)
    log.info("trigger: %s", trigger)
    run = load_run_config(params, profile, overrides)
    clock = {"start": time.perf_counter()}
    warming = _warm_workers(run)
    snap = _data_stage(run)
    for fut in warming:
        fut.wait()
    clock["data"] = time.perf_counter()
    sweep_dir, rows = _sweep_stage(run, snap)
    clock["sweep"] = time.perf_counter()
    decision = tasks.select_winner(sweep_dir, dict(run.settings.select))
    artifacts.publish_leaderboard(artifacts.leaderboard(rows, decision.rows), decision.why)
    if decision.winner is None:  # the report still shows why each candidate failed
        try:
            written = tasks.report(sweep_dir)
        except Exception as err:  # noqa: BLE001 - the refusal matters more than the report
            written = f"not written ({type(err).__name__}: {err})"
        raise RetrainRefused(_nothing_passed(sweep_dir, written, decision.why))
    report_path = tasks.report(sweep_dir)
    shipped = _ship_stage(run, snap, sweep_dir, decision, trigger)
    message = f"retrain: {shipped['model_name']} version {shipped['version']} on {snap['md5']}"
    tasks.lock_data_repo(snap, sweep_dir, shipped["bundle"], decision, run.pipeline, message)
    clock["ship"] = time.perf_counter()
    summary = _summary(run, snap, sweep_dir, rows, decision, shipped, clock)
    summary["report"] = report_path
    summary["trigger"] = trigger
    artifacts.publish_summary(summary)
    log.info("retrain done: %s version %s", summary["model_name"], summary["version"])
    return summary


def _nothing_passed(sweep_dir: str, report_path: str, why: str) -> str:
    """One refusal line: what failed, nothing registered, where the gate table is."""
    reason = why.removeprefix("no candidate passed the gates: ")
    decision_md = Path(sweep_dir) / "decision.md"
    return (
        f"no candidate passed the gates, nothing registered ({reason}); "
        f"gate table: {decision_md}; report: {report_path}"
    )


def _summary(
    run: RunConfig,
    snap: dict[str, str],
    sweep_dir: str,
    rows: list[dict[str, Any]],
    decision: Any,
    shipped: dict[str, Any],
    clock: dict[str, float],
) -> dict[str, Any]:
    """What the flow returns and the CLI prints: the challenger, its numbers, where it is."""
    row = next(r for r in rows if r["candidate_id"] == decision.winner)
    uri = shipped["tracking_uri"]
    embedded = "granvae ui  (then open http://127.0.0.1:5000)"
    ui = f"open {uri}" if uri.startswith("http") else embedded
    return {
        "flow_run_id": str(flow_run.id),
        "profile": run.profile,
        "model_name": shipped["model_name"],
        "version": shipped["version"],
        "winner": decision.winner,
        "why": decision.why,
        "metrics": headline(row),
        "data_version": snap["data_version"],
        "sweep_dir": sweep_dir,
        "bundle": shipped["bundle"],
        "verify": shipped["verify"],
        "promotion": shipped["promotion"],
        "tracking_uri": uri,
        "run_id": shipped["run_id"],
        "links": artifacts.links(
            uri,
            shipped["experiment_id"],
            shipped["run_id"],
            shipped["model_name"],
            shipped["version"],
        ),
        "ui": ui,
        "candidates": {r["candidate_id"]: r["status"] for r in rows},
        "seconds": {
            "data": clock["data"] - clock["start"],
            "sweep": clock["sweep"] - clock["data"],
            "ship": clock["ship"] - clock["sweep"],
            "training_loops": sum(float(r.get("train_seconds") or 0) for r in rows),
        },
    }


@flow(name="sweep")
def sweep_only(
    data_dir: str,
    sweep_dir: str,
    data_version: str,
    params: str | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Just the sweep, uncached, into a given folder (runner comparisons, ad-hoc sweeps)."""
    run = load_run_config(params, profile, overrides)
    trainer = tasks.train_candidate.with_options(
        cache_policy=NO_CACHE, cache_key_fn=None, persist_result=False
    )
    return _run_candidates(run, trainer, data_dir, Path(sweep_dir), data_version)


def _runner_for(params: str | None, profile: str | None, overrides: dict[str, Any] | None):
    run = load_run_config(params, profile, overrides)
    return make_runner(run.pipeline, len(candidate_grid(run.settings.sweep, run.settings.model)))


def run_sweep_only(data_dir: str, sweep_dir: str, data_version: str, **config: Any) -> list[dict]:
    """`sweep_only` on the runner the config names (see run_retrain)."""
    runner = _runner_for(config.get("params"), config.get("profile"), config.get("overrides"))
    with shared_api():
        return sweep_only.with_options(task_runner=runner)(
            data_dir, sweep_dir, data_version, **config
        )


def run_retrain(
    params: str | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    trigger: str | None = None,
) -> dict[str, Any]:
    """Pick the task runner from the config, then run the flow with it."""
    runner = _runner_for(params, profile, overrides)
    with shared_api():
        return retrain.with_options(task_runner=runner)(params, profile, overrides, trigger)
