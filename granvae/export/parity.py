"""The parity gate: the ONNX graph must make the decisions the torch model made.

A threshold calibrated on torch scores is shipped with the ONNX graph, so the
two must agree to float-rounding accuracy before a bundle exists. The rule:

    scale     = max(1, median |score_torch|)
    tolerance = rel_tol * scale
    passed    = max |score_onnx - score_torch| <= tolerance
                and no decision flips outside the tolerance band

The score is a sum of thousands of per-pixel NLL terms (~1e3 nats for 64x64),
so an absolute tolerance would be meaningless across image sizes; relative to
the median score it measures reduction-order noise (~1e-8 relative, float32)
while a corrupted weight shows up as >1e-3. The floor of 1 keeps the rule sane
for near-zero scores.

Decisions (``score > threshold``) are compared for every image, but an image
whose torch score lies within ``tolerance`` of the threshold may legitimately
flip: the threshold is an order statistic of torch val scores, so when the
gate runs on the calibration images one image sits *exactly* on it and any
rounding moves it across half the time. Those flips are counted and reported
(``n_boundary_flips``) and do not fail the gate; any flip farther out does.
The anomaly map, latent means and attribution diffs are reported, not gated:
the score is what the line decides on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from granvae.export.graph import as_nhwc, make_session, run_session
from granvae.scoring import InspectionHead

__all__ = ["ParityResult", "parity_check", "torch_outputs"]


@dataclass(frozen=True)
class ParityResult:
    """Numbers of one torch-vs-onnxruntime comparison; see the module docstring."""

    passed: bool
    max_abs_diff_score: float
    score_scale: float
    tolerance: float
    rel_tol: float
    max_abs_diff_map: float
    max_abs_diff_latent: float
    max_abs_diff_attribution: float
    decisions_identical: bool
    n_decision_flips: int
    n_boundary_flips: int
    threshold: float
    n_images: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line with every number a reviewer needs when the gate fails."""
        return (
            f"max|d score|={self.max_abs_diff_score:.6g} vs tolerance {self.tolerance:.6g} "
            f"(rel_tol {self.rel_tol:g} x score scale {self.score_scale:.6g}); "
            f"decision flips {self.n_decision_flips} ({self.n_boundary_flips} within the band) "
            f"at threshold {self.threshold:.6g}; max|d map|={self.max_abs_diff_map:.3g}, "
            f"max|d latent|={self.max_abs_diff_latent:.3g}, "
            f"max|d attribution|={self.max_abs_diff_attribution:.3g}; n={self.n_images}"
        )


@torch.no_grad()
def torch_outputs(
    head: InspectionHead, images_nhwc: np.ndarray, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """The head's outputs on the CPU in the same batches onnxruntime sees."""
    head = head.eval()
    device = next(head.parameters()).device
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images_nhwc), batch_size):
        batch = torch.from_numpy(images_nhwc[start : start + batch_size]).to(device)
        for name, value in head(batch)._asdict().items():
            parts.setdefault(name, []).append(value.float().cpu().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.nanmax(diff)) if diff.size else 0.0


def compare_outputs(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    threshold: float,
    rel_tol: float = 1e-4,
) -> ParityResult:
    """Apply the gate's rule to two output dicts (reference = torch)."""
    ref, cand = reference["score"].astype(np.float64), candidate["score"].astype(np.float64)
    scale = max(1.0, float(np.median(np.abs(ref)))) if ref.size else 1.0
    tolerance = rel_tol * scale
    max_score = _max_abs(ref, cand)
    flips = (ref > threshold) != (cand > threshold)
    boundary = flips & (np.abs(ref - threshold) <= tolerance)
    finite = bool(np.all(np.isfinite(cand)))
    passed = finite and max_score <= tolerance and not bool(np.any(flips & ~boundary))
    return ParityResult(
        passed=passed,
        max_abs_diff_score=max_score if finite else float("inf"),
        score_scale=scale,
        tolerance=tolerance,
        rel_tol=rel_tol,
        max_abs_diff_map=_max_abs(reference["anomaly_map"], candidate["anomaly_map"]),
        max_abs_diff_latent=_max_abs(reference["latent_mean"], candidate["latent_mean"]),
        max_abs_diff_attribution=_max_abs(
            reference["group_attribution"], candidate["group_attribution"]
        ),
        decisions_identical=not bool(np.any(flips)),
        n_decision_flips=int(flips.sum()),
        n_boundary_flips=int(boundary.sum()),
        threshold=float(threshold),
        n_images=len(ref),
    )


def parity_check(
    head: InspectionHead,
    onnx_path: Path | str,
    images_uint8_nhwc: np.ndarray,
    threshold: float,
    rel_tol: float = 1e-4,
    batch_size: int = 64,
) -> ParityResult:
    """Run torch and onnxruntime on the same held-out images and apply the gate.

    Images may also be in the dataset's NCHW layout (see ``as_nhwc``). Use
    held-out images the model did not train on: parity on training images
    proves nothing about the inputs the line will send.
    """
    if not rel_tol > 0:
        raise ValueError(f"rel_tol must be > 0, got {rel_tol}")
    cfg = head.model.config
    images = as_nhwc(images_uint8_nhwc, cfg.image_size, cfg.in_channels)
    if len(images) == 0:
        raise ValueError("parity_check needs at least one image")
    reference = torch_outputs(head, images, batch_size)
    candidate = run_session(make_session(onnx_path), images, batch_size)
    return compare_outputs(reference, candidate, float(threshold), rel_tol)
