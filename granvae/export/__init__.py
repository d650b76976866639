"""ONNX export, parity gate, optional int8 and the edge bundle.

The pieces, in the order ``export_candidate`` runs them:

- ``export_onnx``: the whole InspectionHead as one opset-17 graph, uint8 NHWC
  ``image`` in (dynamic batch), ``score``, ``anomaly_map``, ``latent_mean``,
  ``group_attribution`` out (graph.py says why the TorchScript exporter).
- ``parity_check``: torch vs onnxruntime on held-out images (parity.py has the rule).
- ``quantize_int8`` / ``compare_quantized`` / ``int8_acceptable``: optional,
  never shipped past the AUROC tolerance (quantize.py).
- ``write_bundle``: model.onnx + manifest.json per docs/contracts.md, atomically.

Pure library: no mlflow, no prefect. tracking.py uploads the bundle folder.
"""

from granvae.export.bundle import (
    MANIFEST_FILE,
    MODEL_FILE,
    SCHEMA_VERSION,
    build_manifest,
    sha256_file,
    write_bundle,
)
from granvae.export.candidate import ExportResult, export_candidate
from granvae.export.graph import (
    INPUT_NAME,
    OUTPUT_NAMES,
    ExportError,
    as_nhwc,
    export_onnx,
    make_session,
    onnx_opset,
    read_metadata,
    run_session,
)
from granvae.export.parity import ParityResult, parity_check
from granvae.export.quantize import compare_quantized, int8_acceptable, quantize_int8

__all__ = [
    "ExportError",
    "ExportResult",
    "INPUT_NAME",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "OUTPUT_NAMES",
    "ParityResult",
    "SCHEMA_VERSION",
    "as_nhwc",
    "build_manifest",
    "compare_quantized",
    "export_candidate",
    "export_onnx",
    "int8_acceptable",
    "make_session",
    "onnx_opset",
    "parity_check",
    "quantize_int8",
    "read_metadata",
    "run_session",
    "sha256_file",
    "write_bundle",
]
