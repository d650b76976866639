"""Measure one trained candidate: ELBO, inspection business metrics, attribution,
latency and (when the factors are known) disentanglement.

Everything a selection policy or a person needs is written beside the
candidate (evaluation.json, threshold.json, scores.npz), so a sweep that is
interrupted or re-tracked never has to recompute it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from granvae.config import EvalConfig
from granvae.data import DatasetMeta, Split
from granvae.data.generate import KINDS
from granvae.distributions import recon_mean
from granvae.metrics import attribution, elbo, inspection, latency
from granvae.metrics.aupro import aupro
from granvae.metrics.bootstrap import recall_interval
from granvae.metrics.disentanglement import evaluate_all
from granvae.metrics.thresholds import Threshold, calibrate_threshold
from granvae.models import FactorizedVAE, to_unit
from granvae.objectives import make_groups
from granvae.rule_choice import choose_score_rule, usable_rules
from granvae.scoring import InspectionHead, build_head, save_head_scoring, score_images
from granvae.scoring.tiling import Tiling, grid_tiles

ACTIVE_UNIT_VAR = 0.01
EVALUATION_FILE = "evaluation.json"
THRESHOLD_FILE = "threshold.json"
SCORES_FILE = "scores.npz"
MAX_ELBO_TILES = 1024  # held-out good tiles the ELBO of a tiled model is measured on


def _elbo_metrics(model: FactorizedVAE, good: np.ndarray, granularity: int, cfg: EvalConfig):
    """Held-out ELBO on good test images: what the paper's V-trajectory is drawn from.

    ``elbo`` is over every good test image; ``elbo_iwae_images`` is the ELBO on exactly the
    images the IWAE bound used, so the two bounds are compared on the same images.
    """
    per_image = elbo.elbo_terms(model, good)
    out = elbo.compute_elbo(per_image)
    out.update(elbo.decomposition_terms(model, good, granularity))
    subset = good[: cfg.iwae_images]
    out.update(elbo.compute_iwae(elbo.iwae_bound(model, subset, k=cfg.iwae_k), cfg.iwae_k))
    out["elbo_iwae_images"] = elbo.compute_elbo(elbo.elbo_terms(model, subset))["elbo"]
    return out


@torch.no_grad()
def collapse_diagnostics(model: FactorizedVAE, images: np.ndarray) -> dict[str, float]:
    """Is the model using its latents? Active units (Burda et al. 2016: Var_x E[z_d|x] >
    0.01), KL per image and how sharp reconstructions are relative to the input.

    A collapsed model (no active unit) reconstructs the average image whatever x is; its
    scores then measure distance to the mean image and must not be shipped as a VAE.
    """
    x = to_unit(images)
    mu, logvar = model.encode(x)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    active = int((mu.var(0) > ACTIVE_UNIT_VAR).sum())
    recon = recon_mean(model.config.likelihood, model.decode(mu))

    def grad_energy(t: torch.Tensor) -> float:
        return float(t.diff(dim=-1).pow(2).mean() + t.diff(dim=-2).pow(2).mean())

    return {
        "active_units": float(active),
        "kl_per_image": float(kl.sum(1).mean()),
        "kl_max_dim": float(kl.mean(0).max()),
        "recon_sharpness": grad_energy(recon) / max(grad_energy(x), 1e-12),
        "collapsed": float(active == 0),
    }


def _disentanglement(model: FactorizedVAE, meta: DatasetMeta, cfg: EvalConfig, seed: int):
    """Only for generated data, whose FactorDataset can draw observations for any factors."""
    if not (cfg.disentanglement and meta.factor_names and meta.kind in KINDS):
        return {}
    dataset = KINDS[meta.kind].make(meta.observation_shape[1])

    @torch.no_grad()
    def represent(obs: np.ndarray) -> np.ndarray:
        return model.encode(to_unit(obs))[0].numpy()

    rng = np.random.default_rng(seed)
    return evaluate_all(
        represent,
        dataset,
        rng,
        n_train=cfg.disentanglement_train,
        n_test=cfg.disentanglement_test,
        n_estimators=cfg.dci_estimators,
        factor_vae_votes=(cfg.factor_vae_votes, cfg.factor_vae_votes),
    )


def _inspection(
    head: InspectionHead, splits: dict[str, Split], meta: DatasetMeta, cfg: EvalConfig
) -> tuple[dict[str, float], Threshold, dict[str, np.ndarray]]:
    val = score_images(head, splits["val"].images)
    threshold = calibrate_threshold(val["score"], cfg.false_alarm_rate)
    test = splits["test"]
    out = score_images(head, test.images)
    has_masks = bool(test.masks.any())
    metrics = inspection.compute_inspection(
        out["score"],
        test.labels,
        threshold,
        meta.class_names,
        severity=test.severity,
        pixel_maps=out["anomaly_map"] if has_masks else None,
        masks=test.masks if has_masks else None,
    )
    defect = test.labels > 0
    if defect.any():
        iv = recall_interval(
            val["score"], out["score"][defect], cfg.false_alarm_rate, n_boot=cfg.bootstrap,
            rng=np.random.default_rng(0), threshold=threshold.value,
        )  # fmt: skip
        metrics.update(iv.as_dict("recall_at_far"))
    if has_masks and defect.any():
        metrics["aupro"] = aupro(out["anomaly_map"], test.masks)
    metrics.update(
        attribution.compute_attribution(
            out["group_attribution"],
            test.labels,
            meta.class_names,
            good_reference_attr=val["group_attribution"],
            rng=np.random.default_rng(0),
        )
    )
    arrays = {
        "test_score": out["score"],
        "test_labels": test.labels,
        "test_severity": test.severity,
        "val_score": val["score"],
        "test_attribution": out["group_attribution"],
    }
    return metrics, threshold, arrays


def _model_inputs(images: np.ndarray, tiling: Tiling | None) -> np.ndarray:
    """Images as the model sees them: whole, or the grid tiles of the first few of them."""
    return images if tiling is None else grid_tiles(images, tiling, MAX_ELBO_TILES)


def evaluate_candidate(
    candidate_dir: Path | str,
    splits: dict[str, Split],
    meta: DatasetMeta,
    granularity: int,
    cfg: EvalConfig,
    seed: int = 0,
    tiling: Tiling | None = None,
) -> dict[str, float]:
    """All metrics of one finished candidate; also written to evaluation.json.

    With ``tiling`` the model saw tiles: inspection metrics are on full-size parts (tiled
    and stitched), the ELBO and collapse diagnostics on grid tiles of good parts, and the
    disentanglement scores (defined on whole images' factors) are not computed."""
    candidate_dir = Path(candidate_dir)
    model = FactorizedVAE.load(candidate_dir / "model").eval()
    groups = make_groups(model.config.latent_dim, granularity)
    choices = usable_rules([cfg.score, *cfg.score_alternatives], tiling is not None,
                           model.config.arch == "conv")  # fmt: skip
    head = build_head(
        model, groups, cfg.score, splits["train"].images, cfg.smooth_sigma, cfg.topk_frac,
        tiling=tiling, also=tuple(choices),
    )  # fmt: skip
    chosen = {}
    if len(choices) > 1:  # on synthetic defects on the val images; test stays unseen
        chosen = choose_score_rule(head, splits["val"].images, choices, cfg.false_alarm_rate, seed)
    save_head_scoring(head, candidate_dir)
    test = splits["test"]
    metrics, threshold, arrays = _inspection(head, splits, meta, cfg)
    metrics.update(chosen)
    if chosen and "recall_at_far" in metrics:  # how far the estimate is from real defects
        metrics["synthetic_gap"] = chosen["synthetic_recall_at_far"] - metrics["recall_at_far"]
    good = test.images[test.labels == 0]
    good = _model_inputs(good if len(good) else splits["val"].images, tiling)
    metrics.update(_elbo_metrics(model, good, granularity, cfg))
    metrics.update(
        latency.measure_latency(
            latency.torch_score_fn(head, "cpu"),
            test.images.transpose(0, 2, 3, 1),
            batch_sizes=(1, 64) if tiling is None else (1,),
            repeats=cfg.latency_repeats,
        )
    )
    if tiling is None:
        metrics.update(_disentanglement(model, meta, cfg, seed))
    metrics.update(collapse_diagnostics(model, good))
    metrics["latent_dim"] = model.config.latent_dim
    metrics = {k: float(v) for k, v in metrics.items()}
    (candidate_dir / THRESHOLD_FILE).write_text(json.dumps(threshold.to_dict(), indent=2))
    np.savez_compressed(candidate_dir / SCORES_FILE, **arrays)
    tmp = candidate_dir / (EVALUATION_FILE + ".tmp")
    tmp.write_text(json.dumps(metrics, indent=2, allow_nan=True))
    tmp.replace(candidate_dir / EVALUATION_FILE)
    return metrics


def read_evaluation(candidate_dir: Path | str) -> dict[str, float] | None:
    path = Path(candidate_dir) / EVALUATION_FILE
    return json.loads(path.read_text()) if path.exists() else None
