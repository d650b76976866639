"""Helpers for the edge-runtime tests: a tiny REAL ONNX model honouring the bundle contract.

The real bundles come from granvae's exporter; these tests must not depend on torch, so the
model is built node by node with ``onnx.helper``. Its score is easy to reason about (how far
pixels are from mid-grey), which lets tests build "good" and "defect" images on purpose.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
# The edge package is tested from the source tree, whether or not it is pip-installed here.
if str(DEPLOY) not in sys.path:
    sys.path.insert(0, str(DEPLOY))

SCORE_SCALE = 100.0
OUTPUTS = ["score", "anomaly_map", "latent_mean", "group_attribution"]


def _const(name: str, values: list[int] | list[float], dtype: int) -> onnx.NodeProto:
    """A Constant node; keeps the graph self-contained (no initializer bookkeeping)."""
    tensor = helper.make_tensor(name + "_t", dtype, [len(values)], values)
    return helper.make_node("Constant", [], [name], value=tensor)


def _quadrant_nodes(height: int, width: int) -> list[onnx.NodeProto]:
    """Per-quadrant means of the anomaly map: a stand-in for per-group attribution (G=4)."""
    h2, w2 = height // 2, width // 2
    nodes = [
        _const("ax12", [1, 2], TensorProto.INT64),
        _const("ax1", [1], TensorProto.INT64),
    ]
    bounds = [(0, h2, 0, w2), (0, h2, w2, width), (h2, height, 0, w2), (h2, height, w2, width)]
    for k, (r0, r1, c0, c1) in enumerate(bounds):
        nodes += [
            _const(f"q{k}_start", [r0, c0], TensorProto.INT64),
            _const(f"q{k}_end", [r1, c1], TensorProto.INT64),
            helper.make_node(
                "Slice", ["anomaly_map", f"q{k}_start", f"q{k}_end", "ax12"], [f"q{k}_slice"]
            ),
            helper.make_node(
                "ReduceMean", [f"q{k}_slice"], [f"q{k}_mean2"], axes=[1, 2], keepdims=0
            ),
            helper.make_node("Unsqueeze", [f"q{k}_mean2", "ax1"], [f"q{k}"]),
        ]
    nodes.append(
        helper.make_node("Concat", [f"q{k}" for k in range(4)], ["group_attribution"], axis=1)
    )
    return nodes


def build_model(
    height: int = 32, width: int = 32, channels: int = 1, dtype: str = "uint8"
) -> onnx.ModelProto:
    """score = SCORE_SCALE * mean((x/255 - 0.5)^2); anomaly_map = per-pixel mean over channels."""
    elem = TensorProto.UINT8 if dtype == "uint8" else TensorProto.FLOAT
    nodes = [
        helper.make_node("Cast", ["image"], ["x_f"], to=TensorProto.FLOAT),
        _const("c255", [255.0], TensorProto.FLOAT),
        _const("chalf", [0.5], TensorProto.FLOAT),
        _const("cscale", [SCORE_SCALE], TensorProto.FLOAT),
        helper.make_node("Div", ["x_f", "c255"], ["x01"]),
        helper.make_node("Sub", ["x01", "chalf"], ["dev"]),
        helper.make_node("Mul", ["dev", "dev"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["anomaly_map"], axes=[3], keepdims=0),
        helper.make_node("ReduceMean", ["sq"], ["mse"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mse", "cscale"], ["score"]),
        helper.make_node("ReduceMean", ["x01"], ["x_mean"], axes=[1, 2, 3], keepdims=1),
        _const("lat_shape", [-1, 1], TensorProto.INT64),
        helper.make_node("Reshape", ["x_mean", "lat_shape"], ["x_mean2"]),
        helper.make_node("Concat", ["x_mean2", "x_mean2"], ["latent_mean"], axis=1),
    ]
    nodes += _quadrant_nodes(height, width)
    graph = helper.make_graph(
        nodes,
        "edge_fixture",
        [helper.make_tensor_value_info("image", elem, ["N", height, width, channels])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", height, width]),
            helper.make_tensor_value_info("latent_mean", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("group_attribution", TensorProto.FLOAT, ["N", 4]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_manifest(
    model_sha: str,
    height: int,
    width: int,
    channels: int,
    threshold: float,
    resize: str,
    dtype: str = "uint8",
) -> dict:
    """A manifest exactly as docs/contracts.md "Edge bundle" spells it."""
    now = _dt.datetime.now(_dt.UTC).isoformat()
    return {
        "schema_version": 1,
        "model_file": "model.onnx",
        "model_sha256": model_sha,
        "opset": 17,
        "input": {
            "name": "image",
            "layout": "NHWC",
            "dtype": dtype,
            "height": height,
            "width": width,
            "channels": channels,
            "color_mode": "L" if channels == 1 else "RGB",
            "resize": resize,
        },
        "outputs": list(OUTPUTS),
        "groups": [[0], [1]],
        "threshold": {
            "value": threshold,
            "score": "neg_elbo",
            "false_alarm_rate": 0.01,
            "calibrated_on": "fixture",
            "n_images": 0,
            "date": now,
        },
        "class_names": ["good", "defect"],
        "candidate": {"objective": "fixture", "granularity": 1, "beta": 1.0, "latent_dim": 2},
        "data_version": "fixture",
        "mlflow_model_uri": None,
        "metrics": {},
        "revision": 1,
        "created": now,
        "previous_revisions": [],
    }


def make_bundle(
    directory: Path,
    height: int = 32,
    width: int = 32,
    channels: int = 1,
    threshold: float = 5.0,
    resize: str = "bilinear",
    dtype: str = "uint8",
    tiling: dict | None = None,
) -> Path:
    """Write model.onnx + manifest.json (correct sha256) into ``directory`` and return it.

    With ``tiling`` (see tiling_block) the graph is the per-tile model and the manifest
    describes a tiled bundle.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(build_model(height, width, channels, dtype), str(directory / "model.onnx"))
    sha = sha256_file(directory / "model.onnx")
    manifest = make_manifest(sha, height, width, channels, threshold, resize, dtype)
    if tiling is not None:
        manifest["tiling"] = tiling
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory


def tiling_block(
    tile: int = 32, stride: int = 32, size: int = 128, reduce: str = "max", **extra
) -> dict:
    """A manifest ``tiling`` block as docs/contracts.md "Tiled bundles" spells it."""
    block = {"tile": tile, "stride": stride, "image_height": size, "image_width": size,
             "map": "l2", "smooth_sigma": 2.0, "reduce": reduce}  # fmt: skip
    return block | extra


def expected_score(gray: np.ndarray) -> float:
    """The fixture model's score for a uint8 image, computed in numpy (for assertions)."""
    x = gray.astype(np.float64) / 255.0
    return float(SCORE_SCALE * np.mean((x - 0.5) ** 2))


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 HxW or HxWxC array as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def noisy_gray(rng: np.random.Generator, spread: float, size: int = 32) -> np.ndarray:
    """A grey image around 128 with uniform noise of +-spread: score grows with spread."""
    noise = rng.uniform(-spread, spread, size=(size, size))
    return np.clip(128 + noise, 0, 255).astype(np.uint8)


def free_port() -> int:
    """A free loopback port (tiny race window is acceptable for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def edge_env() -> dict[str, str]:
    """Environment for a subprocess that runs granvae_edge from the source tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(DEPLOY), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m granvae_edge ARGS`` for real (own process, own exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "granvae_edge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=edge_env(),
    )


def http(method: str, url: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, dict]:
    """One real HTTP request; returns (status, decoded JSON body) for 2xx and 4xx/5xx alike."""
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@contextlib.contextmanager
def running_server(bundle_dir: Path, max_bytes: int = 1 << 20) -> Iterator[tuple[str, object]]:
    """A real EdgeServer on a free loopback port, served from a background thread."""
    from granvae_edge.server import make_server

    server = make_server(bundle_dir, "127.0.0.1", 0, max_bytes=max_bytes, intra_op_threads=1)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def contract_block(
    size: int | tuple[int, int] = 32,
    source_sizes: list[list[int]] | None = None,
    bit_depth: int = 8,
    channels: int = 1,
    ranges: dict | None = None,
) -> dict:
    """A manifest ``frame_contract`` block as docs/contracts.md spells it (granvae's exporter
    writes it from the training data; tests write it by hand to know every bound)."""
    hw = [size, size] if isinstance(size, int) else list(size)
    return {
        "working_size": hw,
        "source_sizes": source_sizes or [hw],
        "bit_depth": bit_depth,
        "window": [0, 2**bit_depth - 1],
        "channels": channels,
        "resize": "bilinear" if source_sizes and source_sizes != [hw] else "none",
        "ranges": ranges if ranges is not None else {},
        "fitted_on": "fixture",
    }


def with_contract(bundle_dir: Path, block: dict, **manifest_fields) -> Path:
    """Add a frame contract (and any other top-level fields) to a fixture bundle's manifest."""
    path = Path(bundle_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["frame_contract"] = block
    manifest.update(manifest_fields)
    path.write_text(json.dumps(manifest, indent=2))
    return Path(bundle_dir)
