"""The granularity sweep: candidates = granularity x capacity x seed, trained and
evaluated in parallel worker processes on the CPU (one after another on a GPU).

A candidate that fails (NaN, a bad config) is recorded as failed and the sweep
goes on. A candidate whose evaluation.json already exists is not retrained, so
a sweep killed half-way picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
import torch
from rich.progress import Progress

from granvae.config import EvalConfig, Settings, SweepConfig
from granvae.data import load_dataset
from granvae.data.store import read_manifest
from granvae.evaluate import evaluate_candidate, read_evaluation
from granvae.metrics.seeds import aggregate_rows
from granvae.models import ModelConfig
from granvae.objectives import ObjectiveConfig, resolve_weights
from granvae.project import portable_path
from granvae.scoring.tiling import TilingConfig
from granvae.train import EpochCallback, StartCallback, TrainConfig, pick_device, train

SWEEP_FILE = "sweep.json"
RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
BY_CONFIG_CSV = "results_by_config.csv"
BY_CONFIG_JSON = "results_by_config.json"
CANDIDATES = "candidates"
EARLY_STOP_IMAGES = 512  # held-out good images early stopping evaluates each epoch; the rest of
# the (larger) val split only calibrates thresholds, where its size buys the promised rate
PROGRESS_FILE = "progress.json"  # {"epoch", "epochs"}: rewritten each epoch, read by retrain's bar
# run_candidate's shape: (candidate, settings, data_dir, out_dir, progress, threads) -> row
CandidateFn = Callable[..., dict]


@dataclass(frozen=True)
class Candidate:
    objective: str
    granularity: int
    beta: float
    latent_dim: int
    seed: int
    tile: int | None = None  # a swept tile size (sweep.tiles); None = the tiling block

    @property
    def candidate_id(self) -> str:
        tile = "" if self.tile is None else f"-t{self.tile}"
        base = f"g{self.granularity}-b{self.beta:g}-d{self.latent_dim}{tile}-s{self.seed}"
        return base if self.objective == "beta_stcvae" else f"{self.objective}-{base}"


def divisors(n: int) -> list[int]:
    """The default granularities: every g that splits D into equal groups."""
    return [g for g in range(1, n + 1) if n % g == 0]


def candidate_grid(cfg: SweepConfig, model: ModelConfig) -> list[Candidate]:
    dims = cfg.latent_dims or [model.latent_dim]
    return [
        Candidate(cfg.objective, g, float(b), d, s, t)
        for t in cfg.tiles
        for d in dims
        for g in (cfg.granularities or divisors(d))
        for b in cfg.betas
        for s in cfg.seeds
    ]


def candidate_tiling(c: Candidate, settings: Settings) -> tuple[TilingConfig, EvalConfig]:
    """The tiles a candidate trains and scores on, and the evaluation settings it uses: a
    swept tile size scores with evaluation.tile_score (the texture rules) when it is set."""
    if c.tile is None:
        return settings.tiling, settings.evaluation
    stride = max(1, round(c.tile * settings.sweep.tile_stride_share))
    tiling = settings.tiling.model_copy(update={"tile": c.tile, "stride": stride})
    rule = settings.evaluation.tile_score or settings.evaluation.score
    return tiling, settings.evaluation.model_copy(update={"score": rule})


def _configs(c: Candidate, settings: Settings) -> tuple[ModelConfig, ObjectiveConfig, TrainConfig]:
    model = settings.model.model_copy(update={"latent_dim": c.latent_dim})
    objective = settings.objective.model_copy(
        update={"name": c.objective, "beta": c.beta, "granularity": c.granularity}
    )
    resolve_weights(objective, c.latent_dim)  # a bad candidate fails here, before training
    return model, objective, settings.train.model_copy(update={"seed": c.seed})


def candidate_row(c: Candidate, settings: Settings, status: str, reason: str | None) -> dict:
    """The identity columns of a results row; metrics are added to it when finished."""
    alpha, beta, gamma = settings.objective.alpha, c.beta, settings.objective.gamma
    # a "tile" column only when tile size is swept (0 = the tiling block): never a missing
    # value, which would split seeds of one configuration once the table is read back
    swept = {"tile": c.tile or 0} if any(t is not None for t in settings.sweep.tiles) else {}
    return {
        "candidate_id": c.candidate_id,
        **swept,
        "objective": c.objective,
        "granularity": c.granularity,
        "beta": beta,
        "alpha": alpha,
        "gamma": gamma,
        "latent_dim": c.latent_dim,
        "seed": c.seed,
        "estimator": settings.objective.estimator,
        "status": status,
        "reason": reason,
    }


def run_candidate(
    c: Candidate,
    settings: Settings,
    data_dir: Path,
    out_dir: Path,
    progress: bool = False,
    threads: int | None = None,
    on_start: StartCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> dict:
    """Train + evaluate one candidate; any failure becomes a `failed` row, never an exception.

    ``on_start``/``on_epoch`` reach train() (the retrain flow's live MLflow run); they are
    called after this module's own per-epoch progress file is written."""
    if threads:
        torch.set_num_threads(threads)
    cdir = out_dir / CANDIDATES / c.candidate_id
    try:
        model_cfg, objective, train_cfg = _configs(c, settings)
        splits, meta = load_dataset(data_dir)
        tiling_cfg, eval_cfg = candidate_tiling(c, settings)
        tiling = tiling_cfg.geometry()
        _, height, width = meta.observation_shape
        if tiling is None and height != width:
            raise ValueError(
                f"the parts are {height}x{width} px; a whole-image model needs square images: "
                "set tiling.tile (or import with --image-size)"
            )
        model_cfg = model_cfg.model_copy(
            update={
                "in_channels": meta.observation_shape[0],
                "image_size": meta.observation_shape[1] if tiling is None else tiling.tile,
            }
        )
        done = read_evaluation(cdir)
        status = json.loads((cdir / "status.json").read_text()) if done else None
        if done is None:
            result = train(
                splits["train"].images, model_cfg, objective, train_cfg, cdir,
                progress=progress, val_images=splits["val"].images[:EARLY_STOP_IMAGES],
                tiling=tiling_cfg, on_start=on_start,
                on_epoch=_progress_writer(cdir, train_cfg.epochs, on_epoch),
            )  # fmt: skip
            if result.status != "finished":
                return candidate_row(c, settings, "failed", result.reason)
            status = {
                "epochs_completed": result.epochs_completed,
                "seconds": result.seconds,
                "device": result.device,
            }
            done = evaluate_candidate(
                cdir, splits, meta, c.granularity, eval_cfg, seed=c.seed,
                tiling=tiling,
            )  # fmt: skip
        row = candidate_row(c, settings, "finished", None)
        row.update(
            epochs=status["epochs_completed"],
            train_seconds=status["seconds"],
            device=status["device"],
        )
        return {**row, **done}
    except Exception as err:  # noqa: BLE001 - the sweep records it and goes on
        reason = f"{type(err).__name__}: {err}"
        cdir.mkdir(parents=True, exist_ok=True)
        (cdir / "error.txt").write_text(traceback.format_exc())
        return candidate_row(c, settings, "failed", reason)


def _progress_writer(cdir: Path, epochs: int, then: EpochCallback | None = None):
    """Leave epochs done on disk each epoch: the one thing a progress bar in another
    process (the retrain CLI, candidates run in worker processes) can read; then call
    the caller's own callback, if any."""

    def on_epoch(epoch: int, terms: dict) -> None:
        tmp = cdir / f".{PROGRESS_FILE}.tmp"
        tmp.write_text(json.dumps({"epoch": epoch, "epochs": epochs}))
        os.replace(tmp, cdir / PROGRESS_FILE)
        if then is not None:
            then(epoch, terms)

    return on_epoch


def default_workers(cfg: SweepConfig, device: str) -> int:
    if cfg.workers:
        return cfg.workers
    return 1 if pick_device(device).type == "cuda" else max(1, os.cpu_count() or 1)


def _run_all(
    cands: list[Candidate],
    settings: Settings,
    data_dir: Path,
    out_dir: Path,
    workers: int,
    progress: bool,
    candidate_fn: CandidateFn,
) -> list[dict]:
    rows: dict[str, dict] = {}
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"sweep ({workers} worker{'s' * (workers > 1)})", total=len(cands))
        if workers == 1:
            for c in cands:
                rows[c.candidate_id] = candidate_fn(c, settings, data_dir, out_dir, progress)
                bar.advance(task)
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = {
                    pool.submit(candidate_fn, c, settings, data_dir, out_dir, False, threads): c
                    for c in cands
                }
                for fut in as_completed(futures):
                    c = futures[fut]
                    try:
                        rows[c.candidate_id] = fut.result()
                    except Exception as err:  # noqa: BLE001 - a dead worker fails its candidate
                        reason = f"worker died: {err!r}"
                        rows[c.candidate_id] = candidate_row(c, settings, "failed", reason)
                    bar.advance(task)
    return [rows[c.candidate_id] for c in cands]


def data_version(data_dir: Path) -> str:
    """The dataset store's identity: the manifest hashes every shard, so hash the manifest."""
    digest = hashlib.sha256((Path(data_dir) / "manifest.json").read_bytes()).hexdigest()
    return f"manifest:{digest[:16]}"


def begin_sweep(
    settings: Settings,
    data_dir: Path,
    out_dir: Path,
    cands: list[Candidate],
    workers: int | None,
    data_version_id: str | None = None,
    sweep_id: str | None = None,
) -> dict:
    """Create or refresh sweep.json; a resumed sweep keeps its id and start time, so
    tracking reuses its MLflow runs instead of logging a second copy."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / SWEEP_FILE
    old = json.loads(path.read_text()) if path.exists() else {}
    started = old.get("started") or time.time()
    meta = {
        "settings": settings.model_dump(mode="json"),
        "data_dir": portable_path(data_dir, out_dir),  # relative: the project can move
        "data_version": data_version_id or data_version(data_dir),
        "candidates": [c.candidate_id for c in cands],
        "workers": workers,
        "started": started,
        "sweep_id": old.get("sweep_id") or sweep_id or f"{out_dir.name}-{int(started)}",
    }
    path.write_text(json.dumps(meta, indent=2))
    return meta


def finish_sweep(rows: list[dict], out_dir: Path) -> pd.DataFrame:
    """Write the results table and stamp sweep.json as finished."""
    table = write_results(rows, out_dir)
    path = out_dir / SWEEP_FILE
    meta = json.loads(path.read_text())
    meta["finished"] = time.time()
    path.write_text(json.dumps(meta, indent=2))
    return table


def run_sweep(
    settings: Settings,
    data_dir: Path | str,
    out_dir: Path | str,
    progress: bool = True,
    workers: int | None = None,
    data_version_id: str | None = None,
    candidate_fn: CandidateFn | None = None,
) -> list[dict]:
    """Run (or finish) a sweep into out_dir following docs/contracts.md; return the rows.

    ``candidate_fn`` runs one candidate (default `run_candidate`; `granvae sweep --track`
    passes granvae.tracking.live_sweep.tracked_candidate, which logs its curves live). It
    must be a module-level function: worker processes are spawned and pickle it."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    read_manifest(data_dir)  # fail early, naming the folder, if it is not a dataset store
    cands = candidate_grid(settings.sweep, settings.model)
    workers = min(workers or default_workers(settings.sweep, settings.train.device), len(cands))
    begin_sweep(settings, data_dir, out_dir, cands, workers, data_version_id)
    rows = _run_all(cands, settings, data_dir, out_dir, workers, progress,
                    candidate_fn or run_candidate)  # fmt: skip
    finish_sweep(rows, out_dir)
    return rows


def _json_rows(rows: list[dict]) -> str:
    """JSON has no NaN: missing numbers become null."""
    clean = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in rows
    ]
    return json.dumps(clean, indent=2)


def write_results(rows: list[dict], out_dir: Path) -> pd.DataFrame:
    """results.csv/.json (one row per candidate) and results_by_config.csv/.json.

    The by-config table is metrics.seeds.aggregate_rows: per configuration
    (every candidate key but the seed) the mean and 95% t interval of each
    metric over the seeds that finished; in the CSV the seed list is "0;1;2".
    """
    table = pd.DataFrame(rows)
    table.to_csv(out_dir / RESULTS_CSV, index=False)
    (out_dir / RESULTS_JSON).write_text(_json_rows(rows))
    by_config = aggregate_rows(rows)
    (out_dir / BY_CONFIG_JSON).write_text(_json_rows(by_config))
    flat = [{**a, "seeds": ";".join(map(str, a["seeds"]))} for a in by_config]
    pd.DataFrame(flat).to_csv(out_dir / BY_CONFIG_CSV, index=False)
    return table


def read_results(sweep_dir: Path | str) -> pd.DataFrame:
    return pd.read_csv(Path(sweep_dir) / RESULTS_CSV)


def read_results_by_config(sweep_dir: Path | str) -> list[dict]:
    """The per-configuration means and intervals write_results stored (JSON: seeds as a list)."""
    return json.loads((Path(sweep_dir) / BY_CONFIG_JSON).read_text())
