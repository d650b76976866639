"""Logging a sweep folder (docs/contracts.md "Sweep folder") as MLflow runs.

One sweep run per sweep and one run per candidate. The candidate runs are top-level runs,
not MLflow-nested children: MLflow's UI folds nested runs under their parent, so the
experiment opened on one row per sweep and hid the training runs people compare. A
candidate names its sweep in tags (`granvae.sweep_id`, `granvae.sweep_run_id`); the UI's
"Group by" on `granvae.sweep_id` groups them. The retrain flow opens a candidate's run when
its training starts and logs its curves live (granvae.tracking.live); this module then
completes that same run. Why it is built to be rerun:
a tracking server may die half-way, and the sweep's files on disk are the source of truth.
Runs are found again by tags (`granvae.sweep_id`, `granvae.candidate_id`), params already
logged are not re-sent (MLflow refuses a changed param), metrics carry deterministic
timestamps (the server drops an identical (key, step, timestamp, value) row), and a run whose
`granvae.fingerprint` tag matches the files on disk is skipped. So a rerun after a failure
completes the runs in place, and a rerun of a complete sweep changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import DatasetInput, InputTag, Metric, Param, Run, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from granvae.project import recorded_path
from granvae.tracking.store import Store, TrackingSettings

Progress = Callable[[str], None]
SWEEP_ID = "granvae.sweep_id"
CANDIDATE_ID = "granvae.candidate_id"
ROLE = "granvae.role"
FINGERPRINT = "granvae.fingerprint"
SWEEP_RUN_ID = "granvae.sweep_run_id"  # a candidate run's sweep run (not MLflow nesting)
LOGGED_EPOCH = "granvae.logged_epoch"  # the last epoch whose curves the live run logged
CANDIDATE_PARAMS = (
    "objective",
    "granularity",
    "beta",
    "alpha",
    "gamma",
    "latent_dim",
    "seed",
    "estimator",
)
_NOT_METRICS = set(CANDIDATE_PARAMS) | {"candidate_id", "status", "reason", "device"}
_CANDIDATE_FILES = ("evaluation.json", "threshold.json", "status.json", "error.txt")
_PARENT_FILES = (
    "sweep.json",
    "results.csv",
    "results.json",
    "decision.csv",
    "decision.md",
    "params.resolved.yaml",  # the exact params, profile applied (written by the retrain flow)
)


@dataclass
class SweepInfo:
    """What the sweep folder says about itself, read once."""

    directory: Path
    meta: dict[str, Any]
    sweep_id: str
    data_version: str | None
    rows: list[dict[str, Any]]
    base_ms: int  # the sweep's start: deterministic metric timestamps


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def read_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """results.json if present (NaN as null), else results.csv."""
    if (sweep_dir / "results.json").exists():
        return json.loads((sweep_dir / "results.json").read_text())
    import pandas as pd  # lazily: only old sweeps lack results.json; `granvae models` never

    table = pd.read_csv(sweep_dir / "results.csv")
    return [{k: _clean(v) for k, v in row.items()} for row in table.to_dict("records")]


def read_sweep(sweep_dir: Path | str, data_version: str | None = None) -> SweepInfo:
    """sweep.json + results; the id falls back to a hash of the folder and its start time."""
    directory = Path(sweep_dir).resolve()
    meta_path = directory / "sweep.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta.get("data_dir"):  # stored relative to the sweep folder: absolute from here on
        meta["data_dir"] = str(recorded_path(meta["data_dir"], directory))
    started = meta.get("started") or (meta_path.stat().st_mtime if meta_path.exists() else 0)
    sweep_id = meta.get("sweep_id") or meta.get("id")
    if not sweep_id:
        sweep_id = hashlib.sha1(f"{directory}:{started}".encode()).hexdigest()[:16]
    version = data_version or meta.get("data_version") or (meta.get("data") or {}).get("version")
    rows = read_rows(directory)
    return SweepInfo(directory, meta, str(sweep_id), version, rows, int(float(started) * 1000))


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def find_runs(store: Store, experiment_id: str, **tags: str) -> list[Run]:
    """Active runs carrying every given granvae tag, oldest first."""
    names = {"sweep_id": SWEEP_ID, "candidate_id": CANDIDATE_ID, "role": ROLE}
    clauses = [f"tags.`{names[k]}` = '{_quote(v)}'" for k, v in tags.items()]
    runs = store.call(
        "search runs",
        store.client.search_runs,
        [experiment_id],
        filter_string=" and ".join(clauses),
        order_by=["attributes.start_time ASC"],
    )
    return list(runs)


def _fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _files_state(paths: list[Path]) -> list[tuple[str, int, int]]:
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.is_file()]


def get_or_create(store: Store, exp_id: str, tags: dict[str, str], name: str) -> tuple[Run, bool]:
    """The run with these tags, or a new one; (run, created).

    A create retried after a timeout may have succeeded twice on the server: keep the
    oldest run with these tags and delete the twins, so reruns always find one run.
    """
    short = {k.split(".")[-1]: v for k, v in tags.items()}
    found = find_runs(store, exp_id, **short)
    if found:
        return found[0], False
    all_tags = {**tags, MLFLOW_RUN_NAME: name}
    store.call("create run", store.client.create_run, exp_id, tags=all_tags)
    found = find_runs(store, exp_id, **short)
    for twin in found[1:]:
        store.call("delete duplicate run", store.client.delete_run, twin.info.run_id)
    return found[0], True


def _log(
    store: Store,
    run: Run,
    params: dict[str, Any],
    metrics: list[Metric],
    tags: dict[str, str],
) -> None:
    """Batched; params already on the run are skipped (MLflow refuses to change one)."""
    have = run.data.params
    new = [Param(k, str(v)[:6000]) for k, v in params.items() if v is not None and k not in have]
    run_id = run.info.run_id
    for i in range(0, len(new), 100):
        store.call("log params", store.client.log_batch, run_id, params=new[i : i + 100])
    for i in range(0, len(metrics), 1000):
        store.call("log metrics", store.client.log_batch, run_id, metrics=metrics[i : i + 1000])
    tag_list = [RunTag(k, str(v)[:8000]) for k, v in tags.items() if v is not None]
    for i in range(0, len(tag_list), 100):
        store.call("set tags", store.client.log_batch, run_id, tags=tag_list[i : i + 100])


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) or math.isinf(out) else out


def epoch_metrics(epoch: int, terms: dict[str, Any], timestamp_ms: int) -> list[Metric]:
    """One epoch's terms as `train/<term>` at step = epoch (the live and the final path
    both name them so, so their curves are one curve)."""
    return [
        Metric(f"train/{key}", num, timestamp_ms, epoch)
        for key, value in terms.items()
        if key != "epoch" and (num := _numeric(value)) is not None
    ]


def candidate_params(row: dict[str, Any], data_version: str | None) -> dict[str, Any]:
    """The params of a candidate run (the live run logs the same ones first)."""
    return {k: row.get(k) for k in CANDIDATE_PARAMS} | {"data_version": data_version}


def candidate_metrics(
    row: dict[str, Any], cdir: Path, base_ms: int, logged_epoch: int = 0
) -> list[Metric]:
    """Per-epoch `train/<term>` (step = epoch) and every numeric final metric (step 0).

    Epochs up to ``logged_epoch`` were logged live while training (with their real
    times) and are left out, so no step of a curve appears twice."""
    status_path = cdir / "status.json"
    history = json.loads(status_path.read_text()).get("history", []) if status_path.exists() else []
    out = []
    for entry in history:
        epoch = int(entry.get("epoch", 0))
        if epoch > logged_epoch:
            out.extend(epoch_metrics(epoch, entry, base_ms + epoch))
    evaluation = cdir / "evaluation.json"
    final = json.loads(evaluation.read_text()) if evaluation.exists() else {}
    final.update({k: v for k, v in row.items() if k not in _NOT_METRICS})
    for key, value in sorted(final.items()):
        if (num := _numeric(value)) is not None:
            out.append(Metric(key, num, base_ms, 0))
    return out


def _dataset_input(info: SweepInfo) -> list[DatasetInput]:
    """The dataset store as an MLflow input; its manifest hash / data version is the digest."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    if not info.data_version:
        return []
    source_path = info.meta.get("data_dir") or str(info.directory)
    digest = hashlib.sha256(info.data_version.encode()).hexdigest()[:16]
    if len(info.data_version) <= 36:
        digest = info.data_version
    name = Path(source_path).name or "dataset"
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(source_path)
    dataset = MetaDataset(source, name=name, digest=digest)
    context = InputTag("mlflow.data.context", "eval")
    return [DatasetInput(dataset._to_mlflow_entity(), tags=[context])]


def _report_files(sweep_dir: Path, candidate_id: str) -> list[Path]:
    """The candidate's plots wherever the report put them (name or folder holds its id)."""
    report = sweep_dir / "report"
    if not report.is_dir():
        return []
    # g1-b4-d4-s1 must not claim g1-b4-d4-s10's plots: the id ends at a non-word character.
    named = re.compile(rf"(?<![\w.]){re.escape(candidate_id)}(?![0-9A-Za-z.])")
    return sorted(
        p
        for p in report.rglob("*")
        if p.is_file() and (candidate_id in p.parts[:-1] or named.search(p.stem))
    )


def log_artifact_files(store: Store, run_id: str, files: list[Path], dest: str | None) -> None:
    for path in files:
        store.call(f"upload {path.name}", store.client.log_artifact, run_id, str(path), dest)


def log_artifact_dir(store: Store, run_id: str, folder: Path, dest: str) -> None:
    if folder.is_dir():
        store.call(f"upload {folder.name}/", store.client.log_artifacts, run_id, str(folder), dest)


def _log_child(store: Store, exp_id: str, info: SweepInfo, row: dict, parent_id: str) -> str:
    cid = str(row["candidate_id"])
    cdir = info.directory / "candidates" / cid
    plots = _report_files(info.directory, cid)
    files = [cdir / name for name in _CANDIDATE_FILES if (cdir / name).is_file()]
    model_files = sorted((cdir / "model").glob("*")) if (cdir / "model").is_dir() else []
    fp = _fingerprint(row, info.data_version, _files_state(files + model_files + plots))
    tags = {SWEEP_ID: info.sweep_id, CANDIDATE_ID: cid, ROLE: "candidate"}
    run, _ = get_or_create(store, exp_id, tags, cid)  # the live run when there was one
    if run.data.tags.get(FINGERPRINT) == fp:
        return run.info.run_id
    params = candidate_params(row, info.data_version)
    status = str(row.get("status") or "unknown")
    run_tags = {
        "granvae.status": status,
        "granvae.reason": row.get("reason"),
        "granvae.device": row.get("device"),
        "granvae.data_version": info.data_version,
        SWEEP_RUN_ID: parent_id,
    }
    logged = int(run.data.tags.get(LOGGED_EPOCH) or 0)
    _log(store, run, params, candidate_metrics(row, cdir, info.base_ms, logged), run_tags)
    inputs = _dataset_input(info)
    if inputs:
        store.call("log dataset", store.client.log_inputs, run.info.run_id, inputs)
    log_artifact_files(store, run.info.run_id, files, None)
    log_artifact_dir(store, run.info.run_id, cdir / "model", "model")
    log_artifact_files(store, run.info.run_id, plots, "plots")
    end = "FINISHED" if status == "finished" else "FAILED"
    # A run that ended when its training did keeps that end: its duration is the training's.
    ended = run.info.end_time if run.info.status != "RUNNING" else None
    store.call("end run", store.client.set_terminated, run.info.run_id, end, ended)
    store.call("set tag", store.client.set_tag, run.info.run_id, FINGERPRINT, fp)
    return run.info.run_id


def _sweep_params(info: SweepInfo) -> dict[str, Any]:
    settings = info.meta.get("settings") or {}
    sweep = settings.get("sweep") or {}
    params = {f"sweep.{k}": v for k, v in sweep.items()}
    params.update({f"model.{k}": v for k, v in (settings.get("model") or {}).items()})
    params.update({f"train.{k}": v for k, v in (settings.get("train") or {}).items()})
    params.update(
        data_version=info.data_version,
        data_dir=info.meta.get("data_dir"),
        n_candidates=len(info.rows),
    )
    return params


def _log_parent_body(store: Store, run: Run, info: SweepInfo, children: dict[str, str]) -> None:
    finished = sum(1 for r in info.rows if r.get("status") == "finished")
    metrics = [
        Metric("n_candidates", len(info.rows), info.base_ms, 0),
        Metric("n_finished", finished, info.base_ms, 0),
    ]
    from granvae.tracking.provenance import code_tags

    tags = {
        "granvae.data_version": info.data_version,
        "granvae.sweep_dir": str(info.directory),
        **code_tags(),
    }
    _log(store, run, _sweep_params(info), metrics, tags)
    inputs = _dataset_input(info)
    if inputs:
        store.call("log dataset", store.client.log_inputs, run.info.run_id, inputs)
    files = [info.directory / n for n in _PARENT_FILES if (info.directory / n).is_file()]
    log_artifact_files(store, run.info.run_id, files, None)
    log_artifact_dir(store, run.info.run_id, info.directory / "report", "report")


def log_sweep(
    sweep_dir: Path | str,
    experiment: str = "granvae",
    data_version: str | None = None,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Log (or finish logging) a sweep folder; returns the run ids. Safe to rerun."""
    store = store or Store(TrackingSettings())
    say = progress or (lambda _event: None)
    info = read_sweep(sweep_dir, data_version)
    exp_id = store.experiment_id(experiment)
    tags = {SWEEP_ID: info.sweep_id, ROLE: "sweep"}
    parent, created = get_or_create(store, exp_id, tags, f"sweep {info.sweep_id}")
    say("parent_created" if created else "parent_reused")
    children = {}
    for row in info.rows:
        children[str(row["candidate_id"])] = _log_child(
            store, exp_id, info, row, parent.info.run_id
        )
        say(f"candidate:{row['candidate_id']}")
    report = sorted((info.directory / "report").rglob("*"))
    paths = [info.directory / n for n in _PARENT_FILES] + report
    fp = _fingerprint(info.data_version, children, _files_state(paths))
    if parent.data.tags.get(FINGERPRINT) != fp:
        _log_parent_body(store, parent, info, children)
        store.call("end run", store.client.set_terminated, parent.info.run_id, "FINISHED")
        store.call("set tag", store.client.set_tag, parent.info.run_id, FINGERPRINT, fp)
    say("done")
    return {
        "tracking_uri": store.uri,
        "experiment_id": exp_id,
        "sweep_id": info.sweep_id,
        "parent_run_id": parent.info.run_id,
        "children": children,
        "data_version": info.data_version,
    }
