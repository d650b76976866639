"""Signed bundles for tests: the torch-free edge fixture model, listed and signed like an export.

granvae.export.bundle.write_bundle does the same for real exports (tests/test_bundle_signing.py
checks the two agree); this helper lets edge tests sign without exporting a torch model.
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edge_fixtures import make_bundle, sha256_file

from granvae.signing import init_keys, load_private_key, sign_bundle

STATS_FILE = "score_stats.npz"


def make_keys(folder: Path) -> tuple[Ed25519PrivateKey, Path]:
    """A fresh pair in ``folder``: the private key and the public PEM path devices trust."""
    pair = init_keys(folder)
    return load_private_key(pair.private), pair.public


def list_files(bundle: Path) -> None:
    """Add the ``files`` map (every file but the manifest and its signature) to the manifest."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = {
        p.name: sha256_file(p)
        for p in sorted(bundle.iterdir())
        if p.is_file() and p.name not in ("manifest.json", "manifest.sig")
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def make_signed_bundle(directory: Path, key: Ed25519PrivateKey, **kwargs) -> Path:
    """make_bundle + a statistics file + ``files`` + manifest.sig signed with ``key``."""
    bundle = make_bundle(directory, **kwargs)
    (bundle / STATS_FILE).write_bytes(b"good-image statistics stand-in\n")
    list_files(bundle)
    sign_bundle(bundle, key)
    return bundle


def set_threshold(bundle: Path, value: float) -> None:
    """The attack of the issue: rewrite the threshold in place, leaving the signature alone."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["threshold"]["value"] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
