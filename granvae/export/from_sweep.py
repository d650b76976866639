"""Export one candidate of a finished sweep, reading everything from the sweep folder.

The sweep already wrote what the bundle needs (the model, the calibrated
threshold, the metrics, the data store's path and version), so the CLI, the DVC
stage and the Prefect flow all export through this one function.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from granvae.data import load_dataset
from granvae.data.frames import frame_contract
from granvae.data.store import read_manifest
from granvae.export.candidate import ExportResult, export_candidate
from granvae.metrics import HEADLINE
from granvae.project import recorded_path
from granvae.select import load_rows

CANDIDATE_KEYS = ("objective", "granularity", "beta", "alpha", "gamma", "latent_dim", "seed")
ATTRIBUTION_ALPHA = 0.01  # docs/results.md: the explaining group is shown only below this


def attribution_block(row: dict[str, Any]) -> dict[str, Any]:
    """Did the explaining-group attribution pass its permutation test (p < 0.01)?"""
    p = row.get("attribution_pvalue")
    p = float(p) if isinstance(p, int | float) and p == p else None
    return {
        "test": "permutation test of class vs explaining group (NMI), docs/results.md",
        "p_value": p,
        "alpha": ATTRIBUTION_ALPHA,
        "significant": p is not None and p < ATTRIBUTION_ALPHA,
    }


def headline(row: dict[str, Any]) -> dict[str, float]:
    """The numbers people read first; absent or NaN ones are left out."""
    values = {key: row.get(key) for key in HEADLINE}
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and v == v}


def export_from_sweep(
    sweep_dir: Path | str,
    candidate_id: str,
    out_dir: Path | str,
    int8: bool = False,
    mlflow_model_uri: str | None = None,
    overwrite: bool = True,
) -> ExportResult:
    """Bundle `candidate_id` of the sweep; int8 is measured on the test split and
    shipped only within the AUROC tolerance (export_candidate decides)."""
    sweep_dir = Path(sweep_dir)
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    rows = [r for r in load_rows(sweep_dir) if r["candidate_id"] == candidate_id]
    if not rows or rows[0]["status"] != "finished":
        raise ValueError(f"{candidate_id}: no finished candidate of that id in {sweep_dir}")
    row, cdir = rows[0], sweep_dir / "candidates" / candidate_id
    data_dir = recorded_path(meta["data_dir"], sweep_dir)  # relative to the sweep folder
    splits, data_meta = load_dataset(data_dir)
    train = splits["train"]
    good = train.images[train.labels == 0]
    contract = frame_contract(
        read_manifest(data_dir).get("source"), good.shape[2:], good.shape[1], good
    )
    return export_candidate(
        cdir,
        out_dir,
        val_images=splits["val"].images,
        threshold=json.loads((cdir / "threshold.json").read_text()),
        class_names=data_meta.class_names,
        data_version=meta["data_version"],
        metrics=headline(row),
        candidate={k: row[k] for k in CANDIDATE_KEYS if row.get(k) is not None},
        mlflow_model_uri=mlflow_model_uri,
        int8=int8,
        test_images=splits["test"].images if int8 else None,
        test_labels=splits["test"].labels if int8 else None,
        overwrite=overwrite,
        frame_contract=contract,
        attribution=attribution_block(row),
    )
