"""The files a model version is made of, assembled locally before the server sees anything.

Why stage first: a missing model.onnx or manifest must fail before a version exists, so the
registry never has to undo a version for a problem that was visible on disk all along.

Two layouts, both with an MLmodel file that carries the input/output signature:
- `bundle/`: the ONNX edge bundle (MLflow's onnx flavour + manifest.json + the exact
  model.onnx bytes the manifest hashes), what `granvae_edge pull` downloads;
- `torch_model/`: the candidate's state dict + config.json (before an ONNX export exists).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec

from granvae.tracking.store import RegistrationRefused

BUNDLE = "bundle"
TORCH = "torch_model"


def signature(height: int, width: int, channels: int, latent_dim: int, groups: int):
    """uint8 NHWC images in; the InspectionHead's four float outputs (docs/contracts.md)."""
    f32 = np.dtype(np.float32)
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, height, width, channels), "image")]),
        outputs=Schema(
            [
                TensorSpec(f32, (-1,), "score"),
                TensorSpec(f32, (-1, height, width), "anomaly_map"),
                TensorSpec(f32, (-1, latent_dim), "latent_mean"),
                TensorSpec(f32, (-1, groups), "group_attribution"),
            ]
        ),
    )


def _n_groups(latent_dim: int, row: dict[str, Any], groups: list | None = None) -> int:
    if groups:
        return len(groups)
    granularity = int(float(row.get("granularity") or 1))
    return math.ceil(latent_dim / max(1, granularity))


def _check_same_candidate(candidate: dict[str, Any], row: dict[str, Any], where: Path) -> None:
    """A bundle exported from another candidate must never be registered as the winner."""
    for key in ("granularity", "beta", "latent_dim", "seed"):
        mine, theirs = row.get(key), candidate.get(key)
        if mine is None or theirs is None:
            continue
        if not math.isclose(float(mine), float(theirs)):
            raise RegistrationRefused(
                f"bundle {where} was exported from another candidate ({key}={theirs}, "
                f"winner {row.get('candidate_id')} has {key}={mine})"
            )


def stage_bundle(bundle_dir: Path, tmp: Path, row: dict[str, Any]) -> Path:
    """tmp/bundle: onnx flavour (MLmodel + signature) over the bundle's own files."""
    import mlflow.onnx
    import onnx

    model_path, manifest_path = bundle_dir / "model.onnx", bundle_dir / "manifest.json"
    missing = [p.name for p in (model_path, manifest_path) if not p.is_file()]
    if missing:
        raise RegistrationRefused(f"bundle {bundle_dir} lacks {', '.join(missing)}")
    manifest = json.loads(manifest_path.read_text())
    _check_same_candidate(manifest.get("candidate") or {}, row, bundle_dir)
    spec = manifest.get("input", {})
    latent = int(float(row.get("latent_dim") or manifest.get("candidate", {}).get("latent_dim")))
    sig = signature(
        int(spec["height"]),
        int(spec["width"]),
        int(spec["channels"]),
        latent,
        _n_groups(latent, row, manifest.get("groups")),
    )
    out = tmp / BUNDLE
    mlflow.onnx.save_model(
        onnx.load(str(model_path)),
        str(out),
        signature=sig,
        save_as_external_data=False,
        pip_requirements=["onnxruntime"],
        metadata={"granvae_manifest": "manifest.json"},
    )
    # The manifest hashes the exported bytes: ship those, not MLflow's re-serialisation.
    shutil.copytree(bundle_dir, out, dirs_exist_ok=True)
    return out


def stage_torch(candidate_dir: Path, tmp: Path, row: dict[str, Any]) -> Path:
    """tmp/torch_model: config.json + model.pt (+ threshold.json) and an MLmodel signature."""
    model_dir = candidate_dir / "model"
    missing = [n for n in ("config.json", "model.pt") if not (model_dir / n).is_file()]
    if missing:
        raise RegistrationRefused(f"candidate model {model_dir} lacks {', '.join(missing)}")
    config = json.loads((model_dir / "config.json").read_text())
    out = tmp / TORCH
    shutil.copytree(model_dir, out)
    # the head's rule + stats (tile_density.npz: the tile-density rules' coreset and moments;
    # feature_bank.npz: feat_knn's coreset of first-layer features)
    for name in ("threshold.json", "scoring.json", "score_stats.npz", "tile_density.npz",
                 "feature_bank.npz"):  # fmt: skip
        if (candidate_dir / name).is_file():
            shutil.copy2(candidate_dir / name, out / name)
    size, channels = int(config["image_size"]), int(config.get("in_channels", 1))
    latent = int(config["latent_dim"])
    sig = signature(size, size, channels, latent, _n_groups(latent, row))
    meta = {"format": "granvae FactorizedVAE state dict", "rebuild": "FactorizedVAE.load(dir)"}
    Model(signature=sig, metadata=meta).save(str(out / "MLmodel"))
    return out
