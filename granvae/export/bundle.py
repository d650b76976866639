"""The edge bundle: model.onnx + manifest.json (+ manifest.sig), exactly per docs/contracts.md.

Every file of the bundle is listed by sha256 in the manifest (``files``) and the manifest is
signed with the exporter's Ed25519 key (granvae.signing), so a device can refuse a bundle whose
threshold, statistics or model somebody changed after export.

The input spec, opset and output names are read back from the ONNX file, not
taken from the caller, so the manifest cannot describe a graph other than the
one beside it. The bundle is written atomically: assembled in a hidden temp
folder beside ``out_dir`` (same file system), fsynced, then renamed into
place. A crash or an error at any point leaves either no ``out_dir`` or the
previous one, never a half bundle that a device could pull.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from granvae.export.graph import INPUT_NAME, OUTPUT_NAMES, onnx_opset
from granvae.fsutil import swap_dir_into_place
from granvae.metrics.thresholds import Threshold
from granvae.signing import SIGNATURE_FILE, sign_bundle

__all__ = [
    "SCHEMA_VERSION",
    "MODEL_FILE",
    "MANIFEST_FILE",
    "write_bundle",
    "sha256_file",
    "input_spec",
    "threshold_block",
]

SCHEMA_VERSION = 1
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
POSITION_FILE = "position_stats.npz"  # granvae.scoring.position.STATS_FILE
STATS_FILE = "score_stats.npz"  # the good-image statistics baked into the graph, for audit
COLOR_MODES = {1: "L", 3: "RGB"}
SCORE_NAME = "neg_elbo"


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _static_dims(model: onnx.ModelProto, name: str) -> list[int | str]:
    graph_io = {v.name: v for v in [*model.graph.input, *model.graph.output]}
    if name not in graph_io:
        raise ValueError(f"the ONNX graph has no input/output named {name!r}")
    dims = graph_io[name].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def input_spec(model: onnx.ModelProto, resize: str = "none") -> dict[str, Any]:
    """The manifest's input block, read from the graph's (N, H, W, C) uint8 input.

    ``resize`` is "bilinear" only when the training data itself went through that resize
    (the frame contract says so); otherwise "none": the model has never seen a resized frame.
    """
    dims = _static_dims(model, INPUT_NAME)
    elem = model.graph.input[0].type.tensor_type.elem_type
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        raise ValueError(f"input {INPUT_NAME!r} must be (N, H, W, C) with fixed H, W, C: {dims}")
    if elem != onnx.TensorProto.UINT8:
        name = onnx.TensorProto.DataType.Name(elem)
        raise ValueError(f"input {INPUT_NAME!r} must be uint8, got {name}")
    height, width, channels = dims[1], dims[2], dims[3]
    if channels not in COLOR_MODES:
        raise ValueError(f"edge bundles take 1 (L) or 3 (RGB) channels, the graph has {channels}")
    return {
        "name": INPUT_NAME,
        "layout": "NHWC",
        "dtype": "uint8",
        "height": height,
        "width": width,
        "channels": channels,
        "color_mode": COLOR_MODES[channels],
        "resize": resize,
    }


def threshold_block(
    threshold: Threshold | Mapping[str, Any], calibrated_on: str | None = None
) -> dict[str, Any]:
    """Contract block: value, score, false_alarm_rate, calibrated_on, n_images, date, method,
    and what the threshold promises the line: the conformal rank, the guarantee in words, the
    expected false-alarm rate on new good parts and its 95% upper confidence bound."""
    data = dict(threshold.to_dict() if isinstance(threshold, Threshold) else threshold)
    parsed = Threshold.from_dict(data)  # validates value / rate / n_images
    return {
        "value": parsed.value,
        "score": str(data.get("score", SCORE_NAME)),
        "false_alarm_rate": parsed.false_alarm_rate,
        "calibrated_on": calibrated_on or data.get("calibrated_on") or "unspecified",
        "n_images": parsed.n_images,
        "date": str(data.get("date") or _now()),
        "method": parsed.method,
        **parsed.guarantee(),
    }


def _json_safe(value: Any) -> Any:
    """NaN/inf become null (strict JSON); numpy scalars become Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _threshold_dict(threshold: Threshold | Mapping[str, Any]) -> dict[str, Any]:
    return threshold.to_dict() if isinstance(threshold, Threshold) else dict(threshold)


def _check_groups(groups: Sequence[Sequence[int]], model: onnx.ModelProto) -> list[list[int]]:
    out = [[int(d) for d in g] for g in groups]
    n_groups = _static_dims(model, "group_attribution")[-1]
    if isinstance(n_groups, int) and n_groups != len(out):
        raise ValueError(f"{len(out)} groups given, the graph emits {n_groups} attributions")
    return out


def build_manifest(
    onnx_path: Path,
    *,
    groups: Sequence[Sequence[int]],
    threshold: Threshold | Mapping[str, Any],
    class_names: Sequence[str],
    candidate: Mapping[str, Any],
    data_version: str,
    mlflow_model_uri: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    calibrated_on: str | None = None,
    scoring: Mapping[str, Any] | None = None,
    tiling: Mapping[str, Any] | None = None,
    frame_contract: Mapping[str, Any] | None = None,
    attribution: Mapping[str, Any] | None = None,
    position: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest dict for ``onnx_path`` (hash, spec and opset read from the file).

    ``frame_contract`` (granvae.data.frames.frame_contract) is what the training data looked
    like; the edge refuses other frames as ``invalid``. Without it ``input.resize`` is "none".
    ``attribution`` says whether the explaining-group attribution passed its significance
    test; the edge shows ``top_group`` only when ``significant`` is true.

    ``tiling`` (granvae.export.tiled.tiling_block) marks a graph that scores tiles of a
    larger part; the edge tiles, stitches, smooths and reduces by it.

    ``scoring`` is the score rule block (rule, smoothing, top-k share and, when the rule
    uses statistics of good images, the stats file shipped beside the model and its hash).
    """
    if not isinstance(data_version, str) or not data_version:
        raise ValueError(f"data_version must be a non-empty string, got {data_version!r}")
    if not class_names or class_names[0] != "good":
        raise ValueError(f"class_names must start with 'good', got {list(class_names)}")
    model = onnx.load(str(onnx_path), load_external_data=False)
    missing = [n for n in OUTPUT_NAMES if n not in {o.name for o in model.graph.output}]
    if missing:
        raise ValueError(f"the ONNX graph lacks outputs {missing}")
    created = _now()
    extra: dict[str, Any] = {"tiling": dict(tiling)} if tiling else {}
    if position:  # granvae.scoring.position statistics shipped beside a tiled model
        extra["position"] = dict(position)
    if frame_contract:
        extra["frame_contract"] = dict(frame_contract)
    extra["attribution"] = dict(attribution or {"significant": False, "p_value": None})
    resize = str((frame_contract or {}).get("resize", "none"))
    return _json_safe(
        {
            **extra,
            "schema_version": SCHEMA_VERSION,
            "model_file": MODEL_FILE,
            "model_sha256": sha256_file(onnx_path),
            "opset": onnx_opset(onnx_path),
            "input": input_spec(model, resize),
            "outputs": list(OUTPUT_NAMES),
            "groups": _check_groups(groups, model),
            "threshold": threshold_block(
                {**_threshold_dict(threshold), **({"score": scoring["rule"]} if scoring else {})},
                calibrated_on,
            ),
            "scoring": dict(scoring or {"rule": SCORE_NAME}),
            "class_names": [str(c) for c in class_names],
            "candidate": dict(candidate),
            "data_version": data_version,
            "mlflow_model_uri": mlflow_model_uri,
            "metrics": dict(metrics or {}),
            "revision": 1,
            "created": created,
            "previous_revisions": [],
        }
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the data files are synced
        pass
    finally:
        os.close(fd)


def _assemble(
    tmp: Path,
    onnx_path: Path,
    fields: dict[str, Any],
    stats_path: Path | None,
    signing_key: Ed25519PrivateKey | None,
    position_path: Path | None = None,
) -> dict[str, Any]:
    """Copy the model (and score statistics) in, hash *the copies*, write and sign the manifest."""
    model = tmp / MODEL_FILE
    shutil.copyfile(onnx_path, model)
    _fsync(model)
    if stats_path is not None:
        shipped = tmp / STATS_FILE
        shutil.copyfile(stats_path, shipped)
        _fsync(shipped)
        fields["scoring"] = {**fields["scoring"], "stats_file": STATS_FILE,
                             "stats_sha256": sha256_file(shipped)}  # fmt: skip
    if position_path is not None:
        shipped = tmp / POSITION_FILE
        shutil.copyfile(position_path, shipped)
        _fsync(shipped)
        fields["position"] = {"file": POSITION_FILE, "sha256": sha256_file(shipped)}
    manifest = build_manifest(model, **fields)
    manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
    (tmp / MANIFEST_FILE).write_text(text, encoding="utf-8")
    _fsync(tmp / MANIFEST_FILE)
    sign_bundle(tmp, signing_key)
    _fsync(tmp / SIGNATURE_FILE)
    return manifest


def write_bundle(
    out_dir: Path | str,
    onnx_path: Path | str,
    *,
    groups: Sequence[Sequence[int]],
    threshold: Threshold | Mapping[str, Any],
    class_names: Sequence[str],
    candidate: Mapping[str, Any],
    data_version: str,
    mlflow_model_uri: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    calibrated_on: str | None = None,
    overwrite: bool = False,
    scoring: Mapping[str, Any] | None = None,
    stats_path: Path | str | None = None,
    tiling: Mapping[str, Any] | None = None,
    frame_contract: Mapping[str, Any] | None = None,
    attribution: Mapping[str, Any] | None = None,
    signing_key: Ed25519PrivateKey | None = None,
    position_path: Path | str | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/{model.onnx, manifest.json, manifest.sig}`` atomically; the manifest.

    ``signing_key`` None: granvae.signing.signing_key() ($GRANVAE_SIGNING_KEY, or the local
    key pair, made on first use).

    ``position_path``: a granvae.scoring.position statistics file (tiled bundles), shipped
    as POSITION_FILE and hashed in the manifest's ``position`` block; the threshold must
    then be one calibrated on position scores.

    ``threshold`` is a ``Threshold`` or its dict (extra keys ``score``,
    ``calibrated_on``, ``date`` are kept); ``calibrated_on`` overrides it.
    Metrics that are NaN are written as null (strict JSON for the device).
    """
    if position_path is not None and not tiling:
        raise ValueError("position_path is set but tiling is not: position statistics are "
                         "full-size maps of a tiled bundle")  # fmt: skip
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True to replace the bundle")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    fields = dict(
        groups=groups,
        threshold=threshold,
        class_names=class_names,
        candidate=candidate,
        data_version=data_version,
        mlflow_model_uri=mlflow_model_uri,
        metrics=metrics,
        calibrated_on=calibrated_on,
        scoring=dict(scoring or {"rule": SCORE_NAME}),
        tiling=tiling,
        frame_contract=frame_contract,
        attribution=attribution,
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is served to devices
        stats = Path(stats_path) if stats_path else None
        manifest = _assemble(
            tmp, Path(onnx_path), fields, stats, signing_key,
            Path(position_path) if position_path else None,
        )  # fmt: skip
        if out_dir.exists() and not overwrite:
            raise FileExistsError(f"{out_dir} exists; pass overwrite=True to replace the bundle")
        swap_dir_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync(out_dir.parent)
    return manifest
