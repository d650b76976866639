"""Load and verify a bundle folder into a ready onnxruntime session.

A device must never score with a model it cannot prove is the one that was registered: the
manifest's signature is checked against the device's trusted keys (signature.py), every file the
manifest lists is hashed, and the model bytes that were hashed are the very bytes handed to
onnxruntime (no second read that could differ). The session's inputs and
outputs are then checked against the manifest, so an exporter/manifest mismatch is caught at
load time instead of at the first image.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from .manifest import MANIFEST_FILE, ManifestError, parse_manifest, read_manifest_bytes
from .signature import (
    SignatureError,
    TrustStore,
    check_files,
    listed_files,
    read_signature,
    verify_signature,
)

_ORT_DTYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}


class BundleError(RuntimeError):
    """The bundle cannot be used: bad manifest, hash mismatch, or a graph that disagrees."""


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its folder, manifest, model hash and a live session."""

    directory: Path
    manifest: dict[str, Any]
    model_sha256: str
    session: ort.InferenceSession
    signed_by: str | None = None  # the trusted key id; None when no trust store was configured

    @property
    def revision(self) -> int:
        return int(self.manifest["revision"])

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"]["value"])


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_threads() -> int:
    """Small devices run other things too; cap the default at 4 intra-op threads."""
    return max(1, min(4, os.cpu_count() or 1))


def session_options(intra_op_threads: int | None = None) -> ort.SessionOptions:
    """Options tuned for single-image, latency-bound scoring on a CPU device."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = intra_op_threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # warnings about unused initializers are noise on a device
    return opts


def _read_verified_model(directory: Path, manifest: dict[str, Any]) -> tuple[bytes, str]:
    path = directory / manifest["model_file"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read model file {path}: {exc}") from exc
    digest = sha256_bytes(data)
    if digest != manifest["model_sha256"].lower():
        raise BundleError(
            f"sha256 mismatch for {path}: file has {digest}, manifest says "
            f"{manifest['model_sha256']}; refusing a model that is not the registered one"
        )
    return data, digest


def _check_dim(actual: Any, expected: int, what: str) -> None:
    # A symbolic (str) or unknown (None) dimension accepts any size; a fixed one must match.
    if isinstance(actual, int) and actual != expected:
        raise BundleError(f"model input {what} is {actual}, manifest says {expected}")


def check_session(session: ort.InferenceSession, manifest: dict[str, Any]) -> None:
    """The graph must take exactly the manifest's input and emit every manifest output."""
    spec = manifest["input"]
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise BundleError(f"model has {len(inputs)} inputs; a bundle model takes exactly one")
    inp = inputs[0]
    if inp.name != spec["name"]:
        raise BundleError(f"model input is named {inp.name!r}, manifest says {spec['name']!r}")
    if inp.type != _ORT_DTYPES[spec["dtype"]]:
        raise BundleError(f"model input type is {inp.type}, manifest says {spec['dtype']}")
    shape = list(inp.shape)
    if len(shape) != 4:
        raise BundleError(f"model input has rank {len(shape)}; NHWC needs 4")
    _check_dim(shape[1], spec["height"], "height")
    _check_dim(shape[2], spec["width"], "width")
    _check_dim(shape[3], spec["channels"], "channels")
    names = {o.name for o in session.get_outputs()}
    missing = [o for o in manifest["outputs"] if o not in names]
    if missing:
        raise BundleError(f"model lacks outputs {missing} named in the manifest (has {names})")


def _verified_manifest(
    directory: Path, trust: TrustStore | None
) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """Manifest parsed from the very bytes whose signature was checked; its file list; signer."""
    raw = read_manifest_bytes(directory)
    signer = None
    if trust is not None:  # before parsing: an unsigned manifest is not worth reading
        signer = verify_signature(raw, read_signature(directory), trust)
    manifest = parse_manifest(raw, directory / MANIFEST_FILE)
    return manifest, listed_files(manifest, required=trust is not None), signer


def load_bundle(
    bundle_dir: str | Path,
    intra_op_threads: int | None = None,
    providers: list[str] | None = None,
    trust: TrustStore | None = None,
) -> Bundle:
    """Verify ``bundle_dir`` (signature, schema, every file hash, graph I/O); a ready Bundle.

    ``trust`` None means the trust store from ``$GRANVAE_EDGE_TRUSTED_KEYS``; with no keys at
    all, listed file hashes are still checked but the signature is not (``signed_by`` None).
    """
    directory = Path(bundle_dir)
    if not directory.is_dir():
        raise BundleError(f"bundle folder {directory} does not exist")
    try:
        trust = trust if trust is not None else TrustStore.resolve()
        manifest, files, signer = _verified_manifest(directory, trust)
        data, digest = _read_verified_model(directory, manifest)
        check_files(directory, files, skip=[manifest["model_file"]])
    except (ManifestError, SignatureError) as exc:
        raise BundleError(str(exc)) from exc
    try:
        session = ort.InferenceSession(
            data,
            sess_options=session_options(intra_op_threads),
            providers=providers or ["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises several private exception types
        path = directory / manifest["model_file"]
        raise BundleError(f"onnxruntime cannot load {path}: {exc}") from exc
    check_session(session, manifest)
    return Bundle(
        directory=directory, manifest=manifest, model_sha256=digest, session=session,
        signed_by=signer,
    )  # fmt: skip
