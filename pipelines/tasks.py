"""One Prefect task per lifecycle verb; each calls one granvae (or versioning) function.

Tasks exchange paths, ids and small dicts, never arrays or models: a task may run in
another process or on another machine, and only what is on disk survives a crash.
Retries are for what can come back on its own (a tracking server, a DVC remote); a data
problem or a bad config fails at once, because retrying cannot fix it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from granvae.config import Settings
from granvae.data import check_dataset, generate, import_mvtec, write_dataset
from granvae.sweep import Candidate, finish_sweep
from pipelines import bundle, versioning
from pipelines.config import PipelineConfig

DVC_YAML = Path(__file__).resolve().parent / "dvc.yaml"  # a link to the project's dvc.yaml

TRANSIENT = (ConnectionError, TimeoutError, versioning.VersioningError)


def _transient(_task: Any, _run: Any, state: Any) -> bool:
    """Retry only failures that time can fix (tracking server, DVC remote, network)."""
    try:
        state.result()
    except Exception as err:  # noqa: BLE001 - classified here
        from granvae.tracking import TrackingUnavailable

        return isinstance(err, (*TRANSIENT, TrackingUnavailable))
    return False


@task(name="ingest", cache_policy=NO_CACHE)
def ingest(settings: Settings, landing: str | None, staging: str) -> str:
    """Landing folder (validated file by file) or the generator -> a staging dataset store."""
    log = get_run_logger()
    data = settings.data
    if landing:
        log.info("ingesting landing folder %s", landing)
        manifest = import_mvtec(  # one shard's files decoded at a time: folders can be large
            landing, staging, image_size=data.image_size, channels=data.channels,
            mixed=data.mixed, bit_depth=data.bit_depth,
        )  # fmt: skip
        for notice in manifest["notices"]:
            log.warning("landing %s: %s", landing, notice)
        return staging
    log.info("generating %s data (seed %s)", data.source, data.seed)
    splits, meta = generate(
        data.source, data.n_train, data.n_val, data.n_test, data.seed, data.image_size,
        defect_px=data.defect_px,
    )  # fmt: skip
    write_dataset(staging, splits, meta)
    return staging


@task(name="validate", cache_policy=NO_CACHE)
def validate(staging: str) -> dict[str, Any]:
    """Re-read the staged store: every shard hash and array checked before DVC sees it."""
    return check_dataset(staging)


@task(name="version-data", cache_policy=NO_CACHE, retry_condition_fn=_transient)
def version_data(staging: str, cfg: PipelineConfig, resolved: dict[str, Any]) -> dict[str, str]:
    """The single DVC/git writer: dvc add + git commit + dvc push (see versioning.py), then
    dvc.yaml + this retrain's resolved params.yaml into the data repository."""
    repo = cfg.data_repo_path()
    snap = versioning.version_snapshot(
        Path(staging), repo, cfg.snapshot, cfg.remote, cfg.remote_name
    )
    files = {"params.yaml": yaml.safe_dump(resolved, sort_keys=False)}
    if DVC_YAML.is_file():
        files["dvc.yaml"] = DVC_YAML.read_text()
    versioning.commit_pipeline(repo, files, f"pipeline: params of the retrain on {snap.md5}")
    get_run_logger().info("data version %s (remote %s)", snap.data_version, snap.remote)
    return snap.to_dict()


@task(name="lock-data-repo", cache_policy=NO_CACHE, retry_condition_fn=_transient)
def lock_data_repo(
    snap: dict[str, str],
    sweep_dir: str,
    bundle_dir: str,
    decision: Any,
    cfg: PipelineConfig,
    message: str,
) -> bool:
    """The retrain's results as the data repo's stage outputs: dvc.lock written, outputs
    pushed, committed (pipelines.datarepo), so `dvc status` there is clean and `dvc metrics
    diff` compares retrains. The second and last DVC writer, after version_data."""
    from pipelines.datarepo import record_retrain

    committed = record_retrain(
        cfg.data_repo_path(), cfg.snapshot, snap["data_version"], Path(sweep_dir),
        Path(bundle_dir), (decision.winner, decision.why), message, cfg.remote_name,
    )  # fmt: skip
    get_run_logger().info("data repository %s: %s", cfg.data_repo_path(),
                          "dvc.lock committed" if committed else "nothing new to lock")  # fmt: skip
    return committed


def candidate_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """data version + candidate params + settings + code: never the run id, so reruns hit."""
    cand: Candidate = parameters["candidate"]
    parts = [
        parameters["data_version"],
        cand.candidate_id,
        parameters["settings_digest"],
        parameters["code_version"],
    ]
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]
    return f"candidate-{cand.candidate_id}-{digest}"


def _device_for(settings: Settings, index: int) -> Settings:
    """On a multi-GPU host each candidate gets GPU index mod n; otherwise unchanged."""
    if settings.train.device != "auto":
        return settings
    import torch

    n_gpus = torch.cuda.device_count()
    if n_gpus < 2:
        return settings
    train = settings.train.model_copy(update={"device": f"cuda:{index % n_gpus}"})
    return settings.model_copy(update={"train": train})


@task(name="warm-up", cache_policy=NO_CACHE)
def warm_up() -> int:
    """A no-op submitted at flow start: the runner's worker processes import torch and
    granvae while the main process ingests and versions data, not after."""
    import os

    return os.getpid()


@task(name="candidate", cache_key_fn=candidate_cache_key, persist_result=True)
def train_candidate(
    candidate: Candidate,
    index: int,
    settings: Settings,
    data_dir: str,
    sweep_dir: str,
    threads: int | None,
    data_version: str,
    settings_digest: str,
    code_version: str,
) -> dict[str, Any]:
    """granvae.sweep.run_candidate: train + evaluate (evaluation is part of it), inside the
    candidate's live MLflow run (curves while it trains) unless `tracking.live` is off."""
    get_run_logger().info("training candidate %s", candidate.candidate_id)
    settings = _device_for(settings, index)
    from granvae.tracking.live_sweep import tracked_candidate

    row = tracked_candidate(candidate, settings, Path(data_dir), Path(sweep_dir),
                            threads=threads, data_version=data_version)  # fmt: skip
    get_run_logger().info("candidate %s: %s", candidate.candidate_id, row["status"])
    return row


@task(name="collect-results", cache_policy=NO_CACHE)
def collect_results(rows: list[dict[str, Any]], sweep_dir: str) -> str:
    finish_sweep(rows, Path(sweep_dir))
    return str(Path(sweep_dir) / "results.csv")


@task(name="select", cache_policy=NO_CACHE)
def select_winner(sweep_dir: str, policy: dict[str, Any]):
    """granvae.select on the results table; decision.csv/.md are written beside it."""
    from granvae.select import SelectionPolicy, load_rows, load_scores, select, write_decision

    rows = load_rows(sweep_dir)
    decision = select(
        rows, SelectionPolicy.model_validate(policy or {}), load_scores(sweep_dir, rows)
    )
    write_decision(decision, sweep_dir)
    get_run_logger().info("selection: %s", decision.why)
    return decision


@task(name="report", cache_policy=NO_CACHE)
def report(sweep_dir: str) -> str:
    """granvae.report.build_report with every candidate's pictures, so each MLflow child
    run carries its traversals, reconstructions and heatmaps, and the parent the V plot."""
    from granvae.report import build_report

    return str(build_report(sweep_dir, all_candidates=True))


@task(name="export", cache_policy=NO_CACHE)
def export(sweep_dir: str, winner: str, out: str, opts: dict[str, Any]) -> dict[str, Any]:
    """granvae.export.from_sweep.export_from_sweep on the winner (parity-gated inside)."""
    return bundle.export_winner(Path(sweep_dir), winner, Path(out), opts)


@task(name="verify-bundle", cache_policy=NO_CACHE)
def verify(bundle_dir: str) -> str:
    line = bundle.verify_bundle(Path(bundle_dir))
    get_run_logger().info("%s", line)
    return line


@task(name="register", cache_policy=NO_CACHE, retry_condition_fn=_transient)
def register(
    sweep_dir: str,
    decision: Any,
    bundle_dir: str,
    data_version: str,
    tracking: dict,
    trigger: str | None = None,
) -> dict[str, Any]:
    """granvae.tracking.register_winner (it logs the sweep first); idempotent per sweep id.
    `trigger` (why the retrain ran) is tagged on the sweep's runs and on the new version."""
    from granvae.tracking import Store, TrackingSettings, list_versions, register_winner
    from pipelines.trigger import TRIGGER_TAG

    cfg = TrackingSettings(**tracking)
    store = Store(cfg)
    version = register_winner(
        sweep_dir,
        decision,
        cfg.model_name,
        bundle_dir=bundle_dir,
        data_version=data_version,  # "<data repo sha>:<md5>"; git_commit is the code's
        store=store,
        experiment=cfg.experiment,
        tags={TRIGGER_TAG: trigger} if trigger else None,
    )
    listed = {v["version"]: v for v in list_versions(cfg.model_name, store=store)}
    return {
        "version": version,
        "model_name": cfg.model_name,
        "tracking_uri": store.uri,
        "run_id": listed[version]["run_id"],
        "experiment_id": store.experiment_id(cfg.experiment),
    }


@task(name="promote", cache_policy=NO_CACHE)
def maybe_promote(
    model_name: str,
    version: int,
    policy: dict,
    metric: str,
    tracking: dict,
    promotion: dict | None = None,
):
    """granvae.tracking.promote without force: a refusal is logged and returned, not raised."""
    from granvae.config import PromotionConfig
    from granvae.select import SelectionPolicy
    from granvae.tracking import PromotionRefused, Store, TrackingSettings, promote

    store = Store(TrackingSettings(**tracking))
    try:
        rec = promote(
            model_name,
            version,
            policy=SelectionPolicy.model_validate(policy or {}),
            compare_metric=metric,
            reason="auto-promotion by the retrain flow",
            user="granvae-retrain",
            store=store,
            rule=PromotionConfig.model_validate(promotion or {}),
        )
    except PromotionRefused as err:
        get_run_logger().warning("auto-promotion refused: %s", err)
        return {"promoted": False, "reason": str(err)}
    get_run_logger().info("%s", rec.line())
    return {"promoted": True, "reason": rec.line()}
