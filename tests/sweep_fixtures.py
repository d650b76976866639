"""Sweep folders exactly as docs/contracts.md "Sweep folder" lays them out, built in seconds.

The tracking and registry tests need sweep folders with chosen metrics (a clear winner, a
tie, all failing) without training anything; the models in them are real, tiny
FactorizedVAEs so the registered artifact is a loadable state dict.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from granvae.models import FactorizedVAE, ModelConfig

HISTORY_TERMS = ("recon", "kl", "mi", "tc", "tc_between", "group_kl", "elbo", "loss")
DATA_VERSION = "manifest:0123456789abcdef"


def candidate_row(
    granularity: int,
    recall: float,
    elbo: float,
    status: str = "finished",
    beta: float = 4.0,
    latent_dim: int = 4,
    seed: int = 0,
    latency: float = 1.5,
) -> dict[str, Any]:
    """A results.csv row: params, status, and the metric columns the contract names."""
    cid = f"g{granularity}-b{beta:g}-d{latent_dim}-s{seed}"
    failed = status != "finished"
    nan = math.nan

    def metric(value: float) -> float:
        return nan if failed else value

    return {
        "candidate_id": cid, "objective": "beta_stcvae", "granularity": granularity,
        "beta": beta, "alpha": 1.0, "gamma": 1.0, "latent_dim": latent_dim, "seed": seed,
        "estimator": "mws", "status": status, "reason": "NonFiniteError: loss" if failed else None,
        "epochs": 0 if failed else 3, "train_seconds": 1.0, "device": "cpu",
        "elbo": metric(elbo), "recon": metric(-elbo - 5), "kl": metric(5.0), "mi": metric(1.0),
        "tc": metric(0.5), "tc_between": metric(0.2), "group_kl": metric(3.0),
        "iwae_elbo": metric(elbo + 1), "image_auroc": metric(0.9), "recall_at_far": metric(recall),
        "observed_far": metric(0.01), "threshold": metric(100.0), "recall_blob": metric(recall),
        "pixel_auroc": metric(0.8), "latency_p50_b1_ms": metric(latency * 0.8),
        "latency_p95_b1_ms": metric(latency), "latency_p50_b64_ms": metric(10.0),
        "latency_p95_b64_ms": metric(12.0),
    }  # fmt: skip


def default_rows() -> list[dict[str, Any]]:
    """g2 wins on recall; g1 is the runner-up; g4 diverged."""
    return [
        candidate_row(1, recall=0.80, elbo=-110.0),
        candidate_row(2, recall=0.83, elbo=-120.0),
        candidate_row(4, recall=0.0, elbo=0.0, status="failed"),
    ]


def _png(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)


def _write_candidate(cdir: Path, row: dict[str, Any], epochs: int) -> None:
    cdir.mkdir(parents=True, exist_ok=True)
    if row["status"] != "finished":
        (cdir / "error.txt").write_text(str(row["reason"]))
        return
    cfg = ModelConfig(arch="mlp", image_size=16, latent_dim=row["latent_dim"], hidden=16)
    FactorizedVAE(cfg).save(cdir / "model")
    history = [
        {"epoch": e, **{t: float(-row["elbo"] / e if t == "loss" else e) for t in HISTORY_TERMS}}
        for e in range(1, epochs + 1)
    ]
    for entry in history:
        entry["elbo"] = row["elbo"] - 10.0 / entry["epoch"]
    status = {"status": "finished", "reason": None, "epochs_completed": epochs,
              "resumed_from_epoch": 0, "device": "cpu", "seconds": 1.0, "out_dir": str(cdir),
              "history": history}  # fmt: skip
    (cdir / "status.json").write_text(json.dumps(status, indent=2))
    names = list(row)
    metrics = {k: row[k] for k in names[names.index("device") + 1 :]}
    (cdir / "evaluation.json").write_text(json.dumps(metrics, indent=2))
    threshold = {"value": 100.0, "false_alarm_rate": 0.01, "n_images": 64,
                 "method": "order_statistic"}  # fmt: skip
    (cdir / "threshold.json").write_text(json.dumps(threshold))
    np.savez_compressed(cdir / "scores.npz", test_score=np.zeros(4), val_score=np.zeros(4))


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def make_sweep(
    root: Path,
    rows: list[dict[str, Any]] | None = None,
    sweep_id: str | None = "sweep-test-1",
    data_version: str = DATA_VERSION,
    epochs: int = 3,
    report: bool = True,
) -> Path:
    """Write a complete sweep folder under root and return it."""
    import pandas as pd

    rows = rows if rows is not None else default_rows()
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root.parent / f"{root.name}-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "manifest.json").write_text(json.dumps({"schema_version": 1, "name": "fixture"}))
    started = time.time()
    meta = {"settings": {"sweep": {"betas": [4.0], "granularities": [1, 2, 4]},
                         "model": {"arch": "mlp", "latent_dim": 4}},
            "data_dir": str(data_dir), "data_version": data_version,
            "candidates": [r["candidate_id"] for r in rows], "workers": 1,
            "started": started, "finished": started + 10.0}  # fmt: skip
    if sweep_id:
        meta["sweep_id"] = sweep_id
    (root / "sweep.json").write_text(json.dumps(meta, indent=2))
    for row in rows:
        _write_candidate(root / "candidates" / row["candidate_id"], row, epochs)
    pd.DataFrame(rows).to_csv(root / "results.csv", index=False)
    clean = [{k: _clean(v) for k, v in r.items()} for r in rows]
    (root / "results.json").write_text(json.dumps(clean, indent=2))
    if report:
        (root / "report").mkdir(exist_ok=True)
        (root / "report" / "report.html").write_text("<html><body>report</body></html>")
        _png(root / "report" / "v_trajectory.png")
        for row in rows:
            _png(root / "report" / "candidates" / row["candidate_id"] / "traversals.png", 200)
    return root


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's (size, mtime_ns): proves a failure touched nothing local."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def fast_store(uri: str, workdir: Path, attempts: int = 3):
    """A Store whose retries take milliseconds, so failure tests stay fast."""
    from granvae.tracking import Store, TrackingSettings

    settings = TrackingSettings(
        uri=uri, workdir=workdir, attempts=attempts, backoff_s=0.01, max_backoff_s=0.02,
        http_timeout_s=120,  # a loaded CI box is slow, not down
    )  # fmt: skip
    return Store(settings)


def unique(prefix: str) -> str:
    """Experiment / model names that never collide on the shared session server."""
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:8]}"
