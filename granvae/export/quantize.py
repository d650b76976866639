"""Optional int8 quantisation, and the policy that decides whether it may ship.

What gets quantised: only the VAE's own layers (nodes whose weight is a
``model.encoder.*`` / ``model.decoder.*`` initializer). The scoring math after
the decoder (per-pixel NLL, its sum over thousands of pixels, the analytic KL,
the group-sum MatMul against the 0/1 ``groups`` matrix) stays float32: it is
cheap, and quantising the group matrix or the NLL sum would corrupt exactly
the numbers the line decides on.

Modes (measured on this project's 64x64 conv net, onnxruntime 1.32, x86 CPU):

- ``"static"``: QDQ format, per-channel int8 weights, uint8 activations
  calibrated (min/max) on good images. Covers Conv, ConvTranspose and Gemm,
  i.e. nearly all FLOPs; onnxruntime fuses the QDQ pairs into integer kernels.
  This is the mode that actually speeds a conv net up (about 1.5x at batch 64),
  and ``export_candidate`` uses it with the val images as calibration set.
- ``"dynamic"``: weights int8, activations quantised on the fly. In onnxruntime
  it turns Gemm into MatMulInteger, so it covers the FC layers only. Conv could
  become ConvInteger, but that kernel measured ~3x *slower* than float32 Conv
  on the CPU, so convolutions are left alone. Needs no data; small gain on conv
  nets, the main gain on the mlp arch.

``quant_pre_process`` runs first (onnx shape inference + onnxruntime's basic
graph optimisation), as onnxruntime recommends; its symbolic shape inference
is skipped because it asserts on the graph's dynamic-batch Reshape.

Never ship int8 blindly: ``compare_quantized`` measures AUROC and decisions on
labelled images, and ``int8_acceptable`` says no when the business metric
moves past tolerance.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from granvae.export.graph import INPUT_NAME, make_session, run_session
from granvae.metrics.inspection import image_auroc

__all__ = ["quantize_int8", "compare_quantized", "int8_acceptable", "network_nodes"]

WEIGHT_PREFIXES = ("model.encoder.", "model.decoder.")
QUANTIZABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def network_nodes(model: onnx.ModelProto, ops: tuple[str, ...] = QUANTIZABLE) -> list[str]:
    """Names of the VAE's weight layers: the only nodes int8 may touch."""
    weights = {i.name for i in model.graph.initializer if i.name.startswith(WEIGHT_PREFIXES)}
    return [
        n.name for n in model.graph.node if n.op_type in ops and any(i in weights for i in n.input)
    ]


def _scoring_nodes(model: onnx.ModelProto) -> list[str]:
    """MatMul/Gemm nodes outside the network (the group sum): excluded from dynamic mode."""
    keep = set(network_nodes(model))
    return [n.name for n in model.graph.node if n.op_type in QUANTIZABLE and n.name not in keep]


class _ImageReader(CalibrationDataReader):
    """Feeds uint8 NHWC calibration images to the graph input in small batches."""

    def __init__(self, images: np.ndarray, batch_size: int = 16) -> None:
        self._batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        self._iter: Iterator[np.ndarray] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def _quantize_static(pre: Path, out: Path, images: np.ndarray) -> None:
    model = onnx.load(str(pre))
    quantize_static(
        str(pre),
        str(out),
        _ImageReader(images),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZABLE),
        nodes_to_quantize=network_nodes(model),
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def _quantize_dynamic(pre: Path, out: Path) -> None:
    quantize_dynamic(
        str(pre),
        str(out),
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_exclude=_scoring_nodes(onnx.load(str(pre))),
        weight_type=QuantType.QInt8,
    )


def quantize_int8(
    onnx_path: Path | str,
    out_path: Path | str,
    mode: str = "dynamic",
    calibration_images: np.ndarray | None = None,
) -> Path:
    """Write an int8 copy of the float graph; see the module docstring for the modes.

    ``calibration_images``: uint8 NHWC good images (static mode only; a few
    hundred suffice for min/max). Metadata props are carried over.
    """
    if mode not in ("dynamic", "static"):
        raise ValueError(f"mode must be 'dynamic' or 'static', got {mode!r}")
    if mode == "static" and (calibration_images is None or len(calibration_images) == 0):
        raise ValueError("static quantisation needs calibration_images (uint8 NHWC)")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="granvae-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        if mode == "static":
            _quantize_static(pre, out_path, np.ascontiguousarray(calibration_images))
        else:
            _quantize_dynamic(pre, out_path)
    _finalize(Path(onnx_path), out_path, mode)
    return out_path


def _finalize(src: Path, dst: Path, mode: str) -> None:
    """Carry the float graph's metadata over and drop opset imports no node uses
    (the pre-process pass declares every onnxruntime domain)."""
    source, target = onnx.load(str(src)), onnx.load(str(dst))
    used = {n.domain for n in target.graph.node} | {""}
    keep = [o for o in target.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del target.opset_import[:]
    target.opset_import.extend(keep)
    present = {p.key for p in target.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in present:
            target.metadata_props.add(key=prop.key, value=prop.value)
    target.metadata_props.add(key="granvae.precision", value=f"int8-{mode}")
    onnx.checker.check_model(target)
    onnx.save(target, str(dst))


def _decision_rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    flagged = scores > threshold
    good, defect = labels == 0, labels != 0
    return {
        "recall": float(flagged[defect].mean()) if defect.any() else math.nan,
        "false_alarm_rate": float(flagged[good].mean()) if good.any() else math.nan,
    }


def compare_quantized(
    fp32_path: Path | str,
    int8_path: Path | str,
    images: np.ndarray,
    labels: np.ndarray,
    threshold: float,
) -> dict[str, Any]:
    """Score labelled images (uint8 NHWC; 0 = good) with both graphs.

    Reports score drift, AUROC of each and its drop (fp32 - int8), decision
    agreement at ``threshold``, and recall / false-alarm rate of each there.
    The fp32 threshold is applied to int8 scores as-is: that is what would
    happen on the line if int8 shipped without recalibration.
    """
    labels = np.asarray(labels)
    fp32 = run_session(make_session(fp32_path), np.ascontiguousarray(images))["score"]
    int8 = run_session(make_session(int8_path), np.ascontiguousarray(images))["score"]
    auroc_fp32, auroc_int8 = image_auroc(fp32, labels), image_auroc(int8, labels)
    rates_fp32 = _decision_rates(fp32, labels, threshold)
    rates_int8 = _decision_rates(int8, labels, threshold)
    diff = np.abs(fp32.astype(np.float64) - int8)
    return {
        "n_images": len(labels),
        "threshold": float(threshold),
        "max_abs_diff_score": float(diff.max()),
        "median_rel_diff_score": float(np.median(diff / np.maximum(1.0, np.abs(fp32)))),
        "auroc_fp32": auroc_fp32,
        "auroc_int8": auroc_int8,
        "auroc_drop": auroc_fp32 - auroc_int8,
        "decision_agreement": float(np.mean((fp32 > threshold) == (int8 > threshold))),
        "recall_fp32": rates_fp32["recall"],
        "recall_int8": rates_int8["recall"],
        "false_alarm_rate_fp32": rates_fp32["false_alarm_rate"],
        "false_alarm_rate_int8": rates_int8["false_alarm_rate"],
    }


def int8_acceptable(comparison: dict[str, Any], max_auroc_drop: float = 0.01) -> bool:
    """Ship int8 only if AUROC fell by at most ``max_auroc_drop`` (absolute).

    Undefined AUROC (NaN: the comparison set lacked good or defect images)
    means the drop was not measured, so the answer is no: an unmeasured
    business metric is never "within tolerance".
    """
    drop = float(comparison.get("auroc_drop", math.nan))
    return math.isfinite(drop) and drop <= max_auroc_drop
