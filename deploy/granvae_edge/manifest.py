"""The bundle manifest: schema check and atomic writes.

The manifest is the only description of the model a device gets, so a malformed one must be
refused up front with the exact field named, rather than failing later in the middle of a shift
with a KeyError. The schema mirrors docs/contracts.md "Edge bundle" (schema_version 1).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
REQUIRED_OUTPUTS = ("score", "anomaly_map", "latent_mean", "group_attribution")
INPUT_DTYPES = ("uint8", "float32")
COLOR_MODES = {"L": 1, "RGB": 3}
RESIZE_MODES = ("bilinear", "none")
TILING_REDUCES = ("max", "topk")

_NUM = (int, float)
_STR_OR_NONE = (str, type(None))

# field -> accepted types; every key here is required (docs/contracts.md lists them all).
_TOP_LEVEL: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "model_file": (str,),
    "model_sha256": (str,),
    "opset": (int,),
    "input": (dict,),
    "outputs": (list,),
    "groups": (list,),
    "threshold": (dict,),
    "class_names": (list,),
    "candidate": (dict,),
    "data_version": (str,),
    "mlflow_model_uri": _STR_OR_NONE,
    "metrics": (dict,),
    "revision": (int,),
    "created": (str,),
    "previous_revisions": (list,),
}
_INPUT: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "layout": (str,),
    "dtype": (str,),
    "height": (int,),
    "width": (int,),
    "channels": (int,),
    "color_mode": (str,),
    "resize": (str,),
}
_TILING_INTS = ("tile", "stride", "image_height", "image_width")
# Only the value is needed to decide; the rest is provenance, type-checked when present.
_THRESHOLD_REQUIRED: dict[str, tuple[type, ...]] = {"value": _NUM}
_THRESHOLD_OPTIONAL: dict[str, tuple[type, ...]] = {
    "score": (str,),
    "false_alarm_rate": _NUM + (type(None),),
    "calibrated_on": _STR_OR_NONE,
    "n_images": (int, type(None)),
    "date": _STR_OR_NONE,
    "method": _STR_OR_NONE,
    "rank": (int, type(None)),
    "guarantee": _STR_OR_NONE,
    "expected_false_alarm_rate": _NUM + (type(None),),
    "false_alarm_rate_upper_95": _NUM + (type(None),),
}


class ManifestError(ValueError):
    """The manifest is missing, unreadable or does not follow the schema."""


def _check_types(
    block: dict[str, Any], spec: dict[str, tuple[type, ...]], prefix: str, required: bool
) -> None:
    for key, types in spec.items():
        field = f"{prefix}{key}"
        if key not in block:
            if required:
                raise ManifestError(f"manifest field '{field}' is missing")
            continue
        value = block[key]
        # bool is an int subclass; a true/false where a number belongs is a schema error.
        if isinstance(value, bool) or not isinstance(value, types):
            names = "/".join(t.__name__ for t in types)
            raise ManifestError(
                f"manifest field '{field}' must be {names}, got {type(value).__name__}"
            )


def _check_input(spec: dict[str, Any]) -> None:
    _check_types(spec, _INPUT, "input.", required=True)
    if spec["layout"] != "NHWC":
        raise ManifestError(f"manifest field 'input.layout' must be 'NHWC', got {spec['layout']!r}")
    if spec["dtype"] not in INPUT_DTYPES:
        raise ManifestError(f"manifest field 'input.dtype' must be one of {INPUT_DTYPES}")
    for key in ("height", "width"):
        if spec[key] <= 0:
            raise ManifestError(f"manifest field 'input.{key}' must be positive")
    mode = spec["color_mode"]
    if mode not in COLOR_MODES:
        raise ManifestError(f"manifest field 'input.color_mode' must be one of {list(COLOR_MODES)}")
    if COLOR_MODES[mode] != spec["channels"]:
        raise ManifestError(
            f"manifest field 'input.channels' is {spec['channels']} but color_mode {mode!r} "
            f"has {COLOR_MODES[mode]}"
        )
    if spec["resize"] not in RESIZE_MODES:
        raise ManifestError(f"manifest field 'input.resize' must be one of {RESIZE_MODES}")


def _tiling_int(block: dict[str, Any], key: str) -> int:
    """One of the tiling block's integer fields: present, an int (not a bool), >= 1."""
    if key not in block:
        raise ManifestError(f"manifest field 'tiling.{key}' is missing")
    value = block[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ManifestError(f"manifest field 'tiling.{key}' must be an int >= 1, got {value!r}")
    return value


def _check_tiling(block: Any, spec: dict[str, Any]) -> None:
    """The optional ``tiling`` block (docs/contracts.md "Tiled bundles"); None = whole image."""
    if block is None:
        return
    if not isinstance(block, dict):
        raise ManifestError(f"manifest field 'tiling' must be dict, got {type(block).__name__}")
    tile, stride, height, width = (_tiling_int(block, k) for k in _TILING_INTS)
    if tile != spec["height"] or tile != spec["width"]:
        raise ManifestError(
            f"manifest field 'tiling.tile' is {tile} but the model input is "
            f"{spec['height']}x{spec['width']}; they must be equal"
        )
    if stride > tile:
        raise ManifestError(
            f"manifest field 'tiling.stride' is {stride} > tile {tile}: pixels between tiles "
            "would never be scored"
        )
    for key, side in (("image_height", height), ("image_width", width)):
        if side < tile:
            raise ManifestError(
                f"manifest field 'tiling.{key}' is {side}, smaller than tile {tile}"
            )
    sigma = block.get("smooth_sigma")
    # 0 = no smoothing (the stitched map of a tile-density rule is reduced as it is)
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma >= 0:
        raise ManifestError(
            f"manifest field 'tiling.smooth_sigma' must be a number >= 0, got {sigma!r}"
        )
    if math.ceil(3 * sigma) >= min(height, width):
        raise ManifestError(
            f"manifest field 'tiling.smooth_sigma' is {sigma}: its kernel radius "
            f"{math.ceil(3 * sigma)} needs an image larger than {height}x{width}"
        )
    reduce = block.get("reduce")
    if reduce not in TILING_REDUCES:
        raise ManifestError(
            f"manifest field 'tiling.reduce' must be one of {TILING_REDUCES}, got {reduce!r}"
        )
    if block["reduce"] == "topk":
        topk = _tiling_int(block, "topk")
        if topk > height * width:
            raise ManifestError(
                f"manifest field 'tiling.topk' is {topk}, more than the {height}x{width} "
                "map's pixels"
            )
    if not isinstance(block.get("map", ""), str):
        raise ManifestError("manifest field 'tiling.map' must be str")


def _check_frame_contract(manifest: dict[str, Any]) -> None:
    """The optional ``frame_contract`` block parses, and its working size is the model's."""
    from .contract import FrameContract  # contract -> preprocess; kept out of import time

    try:
        contract = FrameContract.from_manifest(manifest)
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    if contract is None:
        return
    tiling, spec = manifest.get("tiling"), manifest["input"]
    hw = (tiling["image_height"], tiling["image_width"]) if tiling else (spec["height"],
                                                                        spec["width"])  # fmt: skip
    if contract.working_hw != hw:
        raise ManifestError(
            f"manifest field 'frame_contract.working_size' {list(contract.working_hw)} differs "
            f"from the model's working size {list(hw)}"
        )


def _non_finite_field(value: Any, prefix: str = "") -> str | None:
    """Dotted path of the first NaN/Infinity in ``value``, or None.

    Python's json module reads the non-standard tokens NaN and Infinity; a threshold of
    +Infinity passes every defect and NaN rejects every part, so no number may be non-finite.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return prefix or "(top level)"
    if isinstance(value, dict):
        items = ((f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{prefix}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, child in items:
        found = _non_finite_field(child, path)
        if found:
            return found
    return None


def validate_manifest(manifest: Any) -> dict[str, Any]:
    """Check required keys, types and finiteness; return the manifest so calls can chain.

    Keys this runtime does not know (e.g. ``score.rule``, ``normalization``) are accepted: the
    exporter may add provenance without breaking devices already in the field.
    """
    if not isinstance(manifest, dict):
        raise ManifestError("manifest must be a JSON object")
    bad = _non_finite_field(manifest)
    if bad:
        raise ManifestError(f"manifest field '{bad}' is not a finite number (NaN or Infinity)")
    _check_types(manifest, _TOP_LEVEL, "", required=True)
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise ManifestError(
            f"manifest field 'schema_version' is {manifest['schema_version']}; "
            f"this runtime reads {SCHEMA_VERSION}"
        )
    sha = manifest["model_sha256"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower()):
        raise ManifestError("manifest field 'model_sha256' must be 64 hex characters")
    model_file = manifest["model_file"]
    if not model_file or Path(model_file).name != model_file:
        raise ManifestError("manifest field 'model_file' must be a plain file name in the bundle")
    _check_input(manifest["input"])
    _check_tiling(manifest.get("tiling"), manifest["input"])
    _check_frame_contract(manifest)
    missing = [o for o in REQUIRED_OUTPUTS if o not in manifest["outputs"]]
    if missing:
        raise ManifestError(f"manifest field 'outputs' lacks {missing}")
    _check_types(manifest["threshold"], _THRESHOLD_REQUIRED, "threshold.", required=True)
    _check_types(manifest["threshold"], _THRESHOLD_OPTIONAL, "threshold.", required=False)
    if manifest["revision"] < 1:
        raise ManifestError("manifest field 'revision' must be >= 1")
    return manifest


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """Read and validate ``bundle_dir/manifest.json``."""
    return parse_manifest(read_manifest_bytes(bundle_dir), Path(bundle_dir) / MANIFEST_FILE)


def read_manifest_bytes(bundle_dir: Path) -> bytes:
    """The manifest's exact bytes (what a signature covers), or a ManifestError."""
    path = Path(bundle_dir) / MANIFEST_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path} not found") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc


def parse_manifest(raw: bytes, path: Path) -> dict[str, Any]:
    """Parse and validate manifest bytes read from ``path`` (named in every error)."""
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path} is not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise ManifestError(f"{path} is nested too deeply to be a manifest") from None
    try:
        return validate_manifest(manifest)
    except RecursionError:
        raise ManifestError(f"{path} is nested too deeply to be a manifest") from None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that readers (a serving process reloading) never see a half-written file.

    Temp file in the same folder, fsync, os.replace: a crash leaves either the old or the new
    file, never a truncated one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (best effort: not every platform allows opening a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
