"""Bundle signatures: every file hashed in the manifest, the manifest signed with Ed25519.

Why: the sha256 of model.onnx alone protects nothing once anyone who can write the manifest can
also change the threshold (1e6 passes every defect) or the statistics beside the model. So the
manifest lists every file of the bundle by sha256 (``files``), and ``manifest.sig`` holds an
Ed25519 signature over the exact bytes of manifest.json, made with the promoter's private key.
A device holds only public keys (its *trust store*); a bundle it cannot tie to one of them, or
whose files differ from what the signed manifest lists, is refused.

Trust store: ``--trusted-key PATH`` (repeatable; a PEM public key or a folder of ``*.pub.pem``)
or ``$GRANVAE_EDGE_TRUSTED_KEYS`` (paths separated by ``os.pathsep``). With neither set (the
out-of-the-box demo) file hashes are still checked but the signature is not: the check says so.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

SIGNATURE_FILE = "manifest.sig"
ALGORITHM = "ed25519"
TRUSTED_KEYS_ENV = "GRANVAE_EDGE_TRUSTED_KEYS"
PUBLIC_SUFFIX = ".pub.pem"
MAX_SIGNATURE_BYTES = 4096


class SignatureError(ValueError):
    """The bundle is unsigned, signed by an unknown key, badly signed, or its files differ."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a key: the first 16 hex digits of sha256(raw public key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise SignatureError(f"cannot read trusted key {path}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"trusted key {path} is not an Ed25519 public key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"cannot read signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"signing key {path} is not an Ed25519 private key")
    return key


def _key_files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(path.glob(f"*{PUBLIC_SUFFIX}"))
        if not found:
            raise SignatureError(f"trusted-key folder {path} holds no *{PUBLIC_SUFFIX} file")
        return found
    if not path.is_file():
        raise SignatureError(f"trusted key {path} does not exist")
    return [path]


@dataclass(frozen=True)
class TrustStore:
    """The public keys a device accepts bundles from, by key id."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> TrustStore:
        keys: dict[str, Ed25519PublicKey] = {}
        for path in paths:
            for file in _key_files(Path(path)):
                key = load_public_key(file)
                keys[key_id(key)] = key
        if not keys:
            raise SignatureError("no trusted key given")
        return cls(keys)

    @classmethod
    def resolve(cls, paths: Iterable[str | Path] | None = None) -> TrustStore | None:
        """Explicit paths, else $GRANVAE_EDGE_TRUSTED_KEYS, else None (signatures unchecked)."""
        given = [p for p in (paths or []) if p]
        if not given:
            env = os.environ.get(TRUSTED_KEYS_ENV, "")
            given = [p for p in env.split(os.pathsep) if p]
        return cls.from_paths(given) if given else None


def sign_bytes(private_key: Ed25519PrivateKey, data: bytes) -> dict[str, str]:
    """The ``manifest.sig`` document for ``data`` (the manifest's exact bytes)."""
    return {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(data)).decode("ascii"),
    }


def read_signature(bundle_dir: Path) -> dict[str, Any] | None:
    """``manifest.sig`` as a dict, None when absent; SignatureError when unreadable."""
    path = Path(bundle_dir) / SIGNATURE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SignatureError(f"cannot read {path}: {exc}") from None
    try:
        if len(raw) > MAX_SIGNATURE_BYTES:
            raise ValueError(f"{len(raw)} bytes, more than a signature holds")
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not all(
            isinstance(doc.get(k), str) for k in ("algorithm", "key_id", "signature")
        ):
            raise ValueError("needs string fields algorithm, key_id, signature")
    except ValueError as exc:
        raise SignatureError(f"{path} is not a granvae signature: {exc}") from None
    return doc


def verify_signature(manifest_bytes: bytes, doc: dict[str, Any] | None, trust: TrustStore) -> str:
    """Check ``doc`` signs ``manifest_bytes`` with a trusted key; return that key's id."""
    if doc is None:
        raise SignatureError(f"bundle is unsigned ({SIGNATURE_FILE} missing) and keys are trusted")
    if doc["algorithm"] != ALGORITHM:
        raise SignatureError(f"signature algorithm {doc['algorithm']!r} is not {ALGORITHM}")
    key = trust.keys.get(doc["key_id"])
    if key is None:
        known = ", ".join(sorted(trust.keys))
        raise SignatureError(
            f"bundle is signed by key {doc['key_id']}, not a trusted one ({known})"
        )
    try:
        key.verify(base64.b64decode(doc["signature"], validate=True), manifest_bytes)
    except (InvalidSignature, ValueError):
        raise SignatureError(
            f"bad signature: manifest.json was changed after key {doc['key_id']} signed it"
        ) from None
    return doc["key_id"]


def _plain_name(name: Any) -> str:
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise SignatureError(f"manifest field 'files' names {name!r}: not a plain file name")
    return name


def listed_files(manifest: Mapping[str, Any], required: bool) -> dict[str, str]:
    """The manifest's ``files`` map (name -> sha256), checked for shape; {} if absent."""
    files = manifest.get("files")
    if files is None:
        if required:
            raise SignatureError("manifest field 'files' is missing: a signed bundle lists them")
        return {}
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise SignatureError("manifest field 'files' must map file names to sha256 strings")
    out = {_plain_name(name): digest.lower() for name, digest in files.items()}
    if out.get(manifest["model_file"], manifest["model_sha256"].lower()) != manifest[
        "model_sha256"
    ].lower():
        raise SignatureError("manifest fields 'files' and 'model_sha256' disagree on the model")
    if required and manifest["model_file"] not in out:
        raise SignatureError(f"manifest field 'files' does not list {manifest['model_file']}")
    return out


def sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_files(bundle_dir: Path, files: Mapping[str, str], skip: Iterable[str] = ()) -> None:
    """Every listed file must exist and hash to what the manifest says (``skip``: done already)."""
    done = set(skip)
    for name, want in files.items():
        if name in done:
            continue
        path = Path(bundle_dir) / name
        try:
            got = sha256_path(path)
        except OSError as exc:
            raise SignatureError(f"cannot read {path} listed in the manifest: {exc}") from None
        if got != want:
            raise SignatureError(
                f"sha256 mismatch for {path}: file has {got}, the manifest says {want}"
            )
