"""Signed promotion and rollback records: tell a granvae alias move from a forged tag.

Why: the promotion history is a registry tag, and anyone who can write tags can append an entry
that says "promoted by granvae, gates passed". Each entry granvae writes is signed with the
bundle-signing key (granvae.signing) over its canonical JSON plus the model name, so
`granvae models` can check it against the public keys it trusts and say when it cannot.

Trusted keys for checking: the current signing key's public half plus every retired public key
in the key folder (``granvae keys rotate`` keeps them), so records signed before a rotation
still verify.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from granvae.signing import (
    RETIRED_DIR,
    SigningKeyError,
    default_keys_dir,
    key_id,
    signing_key,
)

SIGNATURE_FIELDS = ("key_id", "signature")


def _canonical(entry: Mapping[str, Any], model_name: str) -> bytes:
    body = {k: v for k, v in entry.items() if k not in SIGNATURE_FIELDS}
    return json.dumps({"model": model_name, "record": body}, sort_keys=True,
                      separators=(",", ":")).encode("utf-8")  # fmt: skip


def sign_record(
    entry: Mapping[str, Any], model_name: str, key: Ed25519PrivateKey | None = None
) -> dict[str, Any]:
    """``entry`` plus ``key_id`` and ``signature`` (base64 Ed25519 over the canonical JSON)."""
    key = key or signing_key()
    signature = key.sign(_canonical(entry, model_name))
    return {**entry, "key_id": key_id(key.public_key()),
            "signature": base64.b64encode(signature).decode("ascii")}  # fmt: skip


def trusted_keys(folder: Path | None = None) -> dict[str, Ed25519PublicKey]:
    """The local signing key's public half and the retired public keys; {} when there is none."""
    keys: dict[str, Ed25519PublicKey] = {}
    try:
        current = signing_key(create=False).public_key()
        keys[key_id(current)] = current
    except SigningKeyError:
        pass
    retired = Path(folder or default_keys_dir()) / RETIRED_DIR
    for path in sorted(retired.glob("*.pub.pem")) if retired.is_dir() else []:
        key = serialization.load_pem_public_key(path.read_bytes())
        if isinstance(key, Ed25519PublicKey):
            keys[key_id(key)] = key
    return keys


def record_signer(
    entry: Mapping[str, Any], model_name: str, keys: Mapping[str, Ed25519PublicKey]
) -> str | None:
    """The trusted key id that signed ``entry`` for ``model_name``, or None (forged/unsigned)."""
    kid, signature = entry.get("key_id"), entry.get("signature")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None or not isinstance(signature, str):
        return None
    try:
        key.verify(base64.b64decode(signature, validate=True), _canonical(entry, model_name))
    except (InvalidSignature, ValueError):
        return None
    return kid
