"""One call from a trained candidate folder to a verified edge bundle.

Order matters: export, then the parity gate (torch vs onnxruntime on held-out
val images), then optionally int8 (gated by the AUROC policy), and only then
the bundle write. Anything failing raises before ``out_dir`` exists.

If int8 is accepted the bundle ships the int8 graph, and its threshold is
recalibrated on the *int8* scores of the same val images at the same
false-alarm rate (order statistic): the torch-calibrated value belongs to the
float scores, and int8 shifts scores by more than the parity tolerance. The
manifest says so in ``threshold.calibrated_on`` and ``candidate.precision``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from granvae.export.bundle import MANIFEST_FILE, MODEL_FILE, write_bundle
from granvae.export.graph import ExportError, as_nhwc, export_onnx, make_session, run_session
from granvae.export.parity import ParityResult, parity_check
from granvae.export.quantize import compare_quantized, int8_acceptable, quantize_int8
from granvae.export.tiled import parity_tiles, tiling_block
from granvae.metrics.thresholds import Threshold, calibrate_threshold
from granvae.models import FactorizedVAE
from granvae.objectives import make_groups
from granvae.scoring import InspectionHead, ScoreStats, ScoringConfig
from granvae.scoring.density import DensityStats
from granvae.scoring.density import set_stats as set_density_stats
from granvae.scoring.features import load_bank as load_feature_bank
from granvae.scoring.head import TileGraph
from granvae.scoring.stats import STATS_FILE
from granvae.train import MODEL_DIR

__all__ = ["ExportResult", "export_candidate", "gate_parity", "onnx_metadata"]


@dataclass(frozen=True)
class ExportResult:
    bundle_dir: Path
    model_path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    parity: ParityResult
    precision: str  # "fp32" | "int8"
    int8: dict[str, Any] | None  # compare_quantized output + "accepted", or None if not tried


def gate_parity(
    head: InspectionHead, onnx_path: Path, images: np.ndarray, threshold: float, rel_tol: float
) -> ParityResult:
    """The parity gate: raise ExportError with every number if the graph disagrees."""
    result = parity_check(head, onnx_path, images, threshold, rel_tol)
    if not result.passed:
        raise ExportError(f"ONNX parity gate failed for {onnx_path}: {result.describe()}")
    return result


def onnx_metadata(
    candidate: Mapping[str, Any], groups: list[list[int]], threshold: Threshold, data_version: str
) -> dict[str, Any]:
    """The manifest's key facts, duplicated into the model file's metadata_props."""
    return {
        "objective": candidate.get("objective"),
        "granularity": candidate.get("granularity"),
        "beta": candidate.get("beta"),
        "latent_dim": candidate.get("latent_dim"),
        "threshold": threshold.value,
        "false_alarm_rate": threshold.false_alarm_rate,
        "data_version": data_version,
        "groups": groups,
    }


def _resolve_groups(
    candidate: dict[str, Any], latent_dim: int, groups: Sequence[Sequence[int]] | None
) -> list[list[int]]:
    if groups is not None:
        return [[int(d) for d in g] for g in groups]
    if "granularity" not in candidate:
        raise ValueError("pass groups=... or a candidate dict with 'granularity'")
    return make_groups(latent_dim, int(candidate["granularity"]))


def _as_threshold(threshold: Threshold | Mapping[str, Any]) -> Threshold:
    return threshold if isinstance(threshold, Threshold) else Threshold.from_dict(dict(threshold))


def _try_int8(
    fp32: Path,
    work: Path,
    val: np.ndarray,
    test: tuple[np.ndarray, np.ndarray],
    threshold: Threshold,
    mode: str,
    max_auroc_drop: float,
) -> tuple[dict[str, Any], Path | None, Threshold | None]:
    """Quantise, compare on labelled test images, and recalibrate if accepted."""
    int8 = quantize_int8(fp32, work / "model.int8.onnx", mode=mode, calibration_images=val)
    comparison = compare_quantized(fp32, int8, test[0], test[1], threshold.value)
    accepted = int8_acceptable(comparison, max_auroc_drop)
    comparison.update(accepted=accepted, mode=mode, max_auroc_drop=max_auroc_drop)
    if not accepted:
        return comparison, None, None
    scores = run_session(make_session(int8), val)["score"]
    recal = calibrate_threshold(scores, threshold.false_alarm_rate)
    comparison["threshold_int8"] = recal.value
    return comparison, int8, recal


def _with_density(stats: ScoreStats, tile_density: DensityStats, work: Path) -> Path:
    """One statistics file for the bundle: the head's arrays and the tile-density coreset
    and moments (``density_*``), every graph constant an auditor may want to read."""
    work.joinpath("stats").mkdir()
    path = stats.save(work / "stats")
    with np.load(path) as data:
        arrays = dict(data)
    arrays.update({f"density_{k}": v for k, v in asdict(tile_density).items()})
    np.savez(path, **arrays)
    return path


def _scoring_block(scoring: ScoringConfig, stats: ScoreStats | None) -> dict[str, Any]:
    """The manifest's ``scoring`` block: the rule, its shape and a summary of the statistics
    (the full arrays ship as score_stats.npz; they are also constants of the graph)."""
    block: dict[str, Any] = {
        "rule": scoring.rule, "smooth_sigma": scoring.smooth_sigma, "topk_frac": scoring.topk_frac,
    }  # fmt: skip
    if stats is not None:
        block["normalization"] = {
            "fitted_on": "training images (good)",
            "pixel_std_median": float(np.median(stats.pixel_std)),
            "fusion_mean": [float(v) for v in stats.fusion_mean],
            "fusion_std": [float(v) for v in stats.fusion_std],
        }
    return block


def _graph_and_parity_images(
    head: InspectionHead, val_images: np.ndarray
) -> tuple[torch.nn.Module, np.ndarray, dict[str, Any] | None]:
    """(module to export, NHWC images the parity gate runs on, manifest tiling block).

    A tiled head exports its tile graph and is gated on tiles of the val images' scoring
    grid; a whole-image head exports itself and is gated on the val images."""
    cfg = head.model.config
    if head.tiling is None:
        return head, as_nhwc(val_images, cfg.image_size, cfg.in_channels), None
    images = np.asarray(val_images)
    if images.ndim != 4 or images.shape[1] != cfg.in_channels:
        raise ValueError(f"tiled export needs NCHW val images with {cfg.in_channels} channels, "
                         f"got shape {images.shape}")  # fmt: skip
    block = tiling_block(head, images.shape[2], images.shape[3])
    return TileGraph(head).eval(), parity_tiles(images, head.tiling), block


def export_candidate(
    candidate_dir: Path | str,
    out_dir: Path | str,
    *,
    val_images: np.ndarray,
    threshold: Threshold | Mapping[str, Any],
    class_names: Sequence[str],
    data_version: str,
    metrics: Mapping[str, Any] | None = None,
    candidate: Mapping[str, Any] | None = None,
    groups: Sequence[Sequence[int]] | None = None,
    mlflow_model_uri: str | None = None,
    calibrated_on: str = "val",
    int8: bool = False,
    int8_mode: str = "static",
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    max_auroc_drop: float = 0.01,
    rel_tol: float = 1e-4,
    opset: int = 17,
    overwrite: bool = False,
    frame_contract: Mapping[str, Any] | None = None,
    attribution: Mapping[str, Any] | None = None,
) -> ExportResult:
    """Load ``candidate_dir/model``, export, gate, (int8), write the bundle at ``out_dir``.

    ``val_images``: held-out good images, uint8, NCHW (dataset layout) or NHWC;
    the parity gate runs on them and static int8 calibrates on them.
    ``candidate``: the manifest's candidate block (objective, granularity, beta,
    seed ...); latent_dim is filled from the model. ``groups`` defaults to
    ``make_groups(latent_dim, candidate["granularity"])``.
    int8 needs labelled ``test_images``/``test_labels`` to measure the AUROC change.
    ``frame_contract`` (granvae.data.frames.frame_contract) and ``attribution`` go into the
    manifest as they are (granvae.export.bundle.build_manifest).
    """
    model = FactorizedVAE.load(Path(candidate_dir) / MODEL_DIR)
    cfg = model.config
    info = {**dict(candidate or {}), "latent_dim": cfg.latent_dim, "precision": "fp32"}
    group_list = _resolve_groups(info, cfg.latent_dim, groups)
    scoring = ScoringConfig.load(candidate_dir) or ScoringConfig(rule="neg_elbo")
    stats_path = Path(candidate_dir) / STATS_FILE
    stats = ScoreStats.load(candidate_dir) if stats_path.exists() else None
    head = InspectionHead(
        model, group_list, scoring.rule, stats, scoring.smooth_sigma, scoring.topk_frac,
        tiling=scoring.geometry(),
    ).eval()  # fmt: skip
    tile_density = DensityStats.load(candidate_dir)  # the tile-density rules' graph constants
    if tile_density is not None:
        set_density_stats(head, tile_density)
    load_feature_bank(head, candidate_dir)  # feat_knn's coreset, a constant of the graph
    thr = _as_threshold(threshold)
    graph, val, tiling = _graph_and_parity_images(head, val_images)
    if int8 and (test_images is None or test_labels is None):
        raise ValueError("int8=True needs test_images and test_labels to measure the AUROC change")
    if int8 and tiling is not None:
        raise ValueError("int8 export of tiled models is not supported: export fp32 (int8=False)")
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="granvae-export-") as tmp:
        work = Path(tmp)
        meta = onnx_metadata(info, group_list, thr, data_version)
        fp32 = export_onnx(graph, work / "model.fp32.onnx", opset=opset, metadata=meta)
        parity = gate_parity(graph, fp32, val, thr.value, rel_tol)
        shipped, ship_thr, comparison = fp32, thr, None
        if int8:
            test = (as_nhwc(test_images, cfg.image_size, cfg.in_channels), np.asarray(test_labels))
            comparison, q_path, q_thr = _try_int8(
                fp32, work, val, test, thr, int8_mode, max_auroc_drop
            )
            if q_path is not None and q_thr is not None:
                shipped, ship_thr, info["precision"] = q_path, q_thr, "int8"
                calibrated_on = f"{calibrated_on} (recalibrated on int8 scores)"
        if stats is not None and tile_density is not None:
            stats_path = _with_density(stats, tile_density, work)
        manifest = write_bundle(
            out_dir, shipped, groups=group_list, threshold=ship_thr, class_names=class_names,
            candidate=info, data_version=data_version, mlflow_model_uri=mlflow_model_uri,
            metrics=metrics, calibrated_on=calibrated_on, overwrite=overwrite,
            scoring=_scoring_block(scoring, stats),
            stats_path=stats_path if stats is not None else None, tiling=tiling,
            frame_contract=frame_contract, attribution=attribution,
        )  # fmt: skip
    return ExportResult(
        bundle_dir=out_dir,
        model_path=out_dir / MODEL_FILE,
        manifest_path=out_dir / MANIFEST_FILE,
        manifest=manifest,
        parity=parity,
        precision=info["precision"],
        int8=comparison,
    )
