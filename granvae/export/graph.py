"""The inspection head as one ONNX graph, and onnxruntime sessions to run it.

Exporter choice (measured with torch 2.13, onnx 1.23, onnxscript 0.7):

- ``torch.onnx.export(..., dynamo=False)``, the TorchScript exporter, writes
  opset 17 natively, names inputs/outputs exactly, honours ``dynamic_axes``
  and takes ~0.1 s. It emits a DeprecationWarning (removal announced, not
  done), which is silenced here on purpose: it is the path that works.
- ``dynamo=True`` only has opset >= 18 implementations. Asked for opset 17 it
  exports at 18 and down-converts with the onnx C API, which leaves Split's
  opset-18 ``num_outputs`` attribute in place, so ``onnx.checker`` rejects the
  file ("Unrecognized attribute: num_outputs for operator Split"). At opset
  18 it works (parity identical) but takes ~5 s per export.

So ``exporter="auto"`` (the default) uses TorchScript at the requested opset
and falls back to dynamo at ``max(opset, 18)`` only if the TorchScript path
raises (e.g. once a later torch removes it). The opset actually written is
read back from the file by the bundle writer, never assumed.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from granvae.scoring import InspectionHead, InspectionOutput

__all__ = [
    "ExportError",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "MIN_OPSET",
    "export_onnx",
    "make_session",
    "run_session",
    "onnx_opset",
    "read_metadata",
    "as_nhwc",
    "physical_cores",
]

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAMES: tuple[str, ...] = InspectionOutput._fields
MIN_OPSET = 17
DYNAMO_MIN_OPSET = 18
METADATA_PREFIX = "granvae."


class ExportError(RuntimeError):
    """Export produced a graph that must not ship (broken graph, failed parity gate)."""


def _head_on_cpu(head: InspectionHead) -> InspectionHead:
    """Export traces on the CPU; copy instead of moving so the caller's module stays put."""
    on_cpu = all(p.device.type == "cpu" for p in head.parameters())
    return (head if on_cpu else copy.deepcopy(head).cpu()).eval()


def _check_shape(head: InspectionHead, image_size: int | None, channels: int | None) -> tuple:
    cfg = head.model.config
    size = cfg.image_size if image_size is None else int(image_size)
    chans = cfg.in_channels if channels is None else int(channels)
    if (size, chans) != (cfg.image_size, cfg.in_channels):
        raise ValueError(
            f"model was built for {cfg.image_size}x{cfg.image_size}x{cfg.in_channels}, "
            f"asked to export {size}x{size}x{chans}"
        )
    return size, chans


def _export_torchscript(head: InspectionHead, dummy: torch.Tensor, path: Path, opset: int) -> None:
    axes = {INPUT_NAME: {0: "N"}, **{name: {0: "N"} for name in OUTPUT_NAMES}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # Slices with a step (tiling) are not folded; harmless, and it cluttered every retrain.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            head,
            (dummy,),
            str(path),
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            do_constant_folding=True,
            dynamo=False,
        )


def _export_dynamo(head: InspectionHead, dummy: torch.Tensor, path: Path, opset: int) -> None:
    batch = torch.export.Dim("N", min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            head,
            (dummy,),
            None,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"images": {0: batch}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    program.save(str(path), external_data=False)


def _run_exporter(
    head: InspectionHead, dummy: torch.Tensor, path: Path, opset: int, exporter: str
) -> str:
    """Returns the exporter that produced the file ("torchscript" | "dynamo")."""
    if exporter == "dynamo":
        if opset < DYNAMO_MIN_OPSET:
            raise ValueError(f"the dynamo exporter needs opset >= {DYNAMO_MIN_OPSET}, got {opset}")
        _export_dynamo(head, dummy, path, opset)
        return "dynamo"
    try:
        _export_torchscript(head, dummy, path, opset)
        return "torchscript"
    except Exception as exc:
        if exporter == "torchscript":
            raise
        logger.warning("TorchScript ONNX export failed (%s); falling back to dynamo", exc)
        _export_dynamo(head, dummy, path, max(opset, DYNAMO_MIN_OPSET))
        return "dynamo"


def _metadata_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _set_metadata(model: onnx.ModelProto, metadata: Mapping[str, Any]) -> None:
    """Keys get the ``granvae.`` prefix; non-strings are JSON (groups, numbers, None)."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        full = key if key.startswith(METADATA_PREFIX) else METADATA_PREFIX + key
        prop = existing.get(full) or model.metadata_props.add()
        prop.key, prop.value = full, _metadata_value(value)


def export_onnx(
    head: InspectionHead,
    path: Path | str,
    opset: int = 17,
    image_size: int | None = None,
    channels: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    exporter: str = "auto",
) -> Path:
    """Write the whole inspection (uint8 NHWC in, the four InspectionOutput fields out).

    Pre-processing lives in the graph (the head does /255 and NHWC->NCHW), so a
    device feeds raw camera bytes and cannot normalise differently from training.
    Batch is dynamic ("N"); height, width and channels are fixed by the model.
    ``metadata`` lands in ``metadata_props`` under ``granvae.<key>`` (non-strings
    as JSON): a model file separated from its manifest still says what it is.
    The manifest stays authoritative (an edge recalibration changes only it).

    ``exporter``: "auto" = TorchScript (``dynamo=False``, ``dynamic_axes``) at
    ``opset``, falling back to dynamo at ``max(opset, 18)`` if it raises. With
    torch 2.13 the dynamo exporter cannot write a valid opset-17 file (its
    down-conversion leaves Split's opset-18 attribute; onnx.checker rejects
    it), so TorchScript is the reliable path; see the module docstring.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ValueError(f"exporter must be auto|torchscript|dynamo, got {exporter!r}")
    head = _head_on_cpu(head)
    size, chans = _check_shape(head, image_size, channels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.randint(0, 256, (2, size, size, chans), dtype=torch.uint8)
    with torch.no_grad():
        used = _run_exporter(head, dummy, path, opset, exporter)
    model = onnx.load(str(path))
    _set_metadata(model, {"exporter": used, "likelihood": head.likelihood, **(metadata or {})})
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported graph fails onnx.checker: {exc}") from exc
    onnx.save(model, str(path))
    return path


def onnx_opset(path: Path | str) -> int:
    """The default-domain opset the file declares (what the manifest records)."""
    model = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def read_metadata(path: Path | str) -> dict[str, str]:
    """``metadata_props`` as a plain dict (values are strings, JSON for non-strings)."""
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def physical_cores() -> int:
    """Cores, not hyper-threads: onnxruntime's intra-op pool scales with real cores."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        pairs = set(re.findall(r"physical id\s*:\s*(\d+).*?core id\s*:\s*(\d+)", text, re.S))
        if pairs:
            return len(pairs)
    except OSError:
        pass
    return max(1, (os.cpu_count() or 2) // 2)


def make_session(path: Path | str, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session tuned for a line station: all graph optimisations, memory-pattern
    planning (fixed shapes per batch size), sequential execution (the graph is a chain,
    parallel branches buy nothing) and one intra-op thread per physical core."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_mem_pattern = True
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def as_nhwc(images: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """uint8 NHWC from NHWC, the dataset's NCHW, or (N, H, W) grey.

    Unambiguous because image_size >= 16 > channels (<= 4): the channel axis is
    the one of length ``channels``.
    """
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255), got {arr.dtype}")
    if arr.ndim == 3 and channels == 1:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"images must be 4-d (N, H, W, C) or (N, C, H, W), got {arr.shape}")
    if arr.shape[1:] == (channels, image_size, image_size):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[1:] != (image_size, image_size, channels):
        raise ValueError(
            f"images of shape {arr.shape} do not fit a {image_size}x{image_size}x{channels} model"
        )
    return np.ascontiguousarray(arr)


def run_session(
    session: ort.InferenceSession, images_nhwc: np.ndarray, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """All four outputs by name, in batches (bounded memory on large held-out sets)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
    for start in range(0, len(images_nhwc), batch_size):
        batch = images_nhwc[start : start + batch_size]
        for name, value in zip(
            OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch}), strict=True
        ):
            parts[name].append(np.asarray(value, dtype=np.float32))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
