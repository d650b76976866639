"""Ed25519 keys that sign edge bundles: make, rotate, load; sign a bundle's manifest.

Why: a device must be able to tell a bundle granvae exported from one somebody edited in the
artifact store (a threshold of 1e6 passes every defect). The exporter lists every bundle file by
sha256 in manifest.json and signs the manifest's exact bytes into ``manifest.sig``; devices hold
only the public key (granvae_edge.signature verifies; its document format is mirrored here, and
tests keep the two in step, because deploy/ never imports granvae and granvae never needs it).

Key files (a folder, default ``$GRANVAE_KEYS_DIR`` or ``~/.config/granvae/keys``):
- ``signing_key.pem``: the private key, PKCS#8 PEM, created 0600 (never readable by others,
  not even for an instant: the mode is given to ``open`` itself);
- ``signing_key.pub.pem``: the public key to copy to devices;
- ``retired/<key_id>.pub.pem``: public keys of rotated-out pairs, for devices to keep trusting
  bundles signed before the rotation until they are re-signed or replaced.
``$GRANVAE_SIGNING_KEY`` names a private key file directly (the promoter role's key on a plant).
With neither, the first export makes a pair in the default folder, so the demo works as is.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEYS_DIR_ENV = "GRANVAE_KEYS_DIR"
SIGNING_KEY_ENV = "GRANVAE_SIGNING_KEY"
PRIVATE_FILE = "signing_key.pem"
PUBLIC_FILE = "signing_key.pub.pem"
RETIRED_DIR = "retired"
SIGNATURE_FILE = "manifest.sig"  # mirrors granvae_edge.signature.SIGNATURE_FILE
ALGORITHM = "ed25519"


class SigningKeyError(ValueError):
    """A key file is missing, unreadable, too open, or not an Ed25519 key."""


@dataclass(frozen=True)
class KeyPair:
    """Where a pair lives and its id (what manifest.sig names)."""

    private: Path
    public: Path
    key_id: str


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of sha256(raw public key): the id devices look keys up by."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def default_keys_dir() -> Path:
    if os.environ.get(KEYS_DIR_ENV):
        return Path(os.environ[KEYS_DIR_ENV])
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "granvae" / "keys"


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the first byte (O_EXCL: never reuse a file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a umask can only remove bits; this pins the mode exactly
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_pair(folder: Path) -> KeyPair:
    key = Ed25519PrivateKey.generate()
    private, public = folder / PRIVATE_FILE, folder / PUBLIC_FILE
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp_private = folder / f".{PRIVATE_FILE}.new"
    tmp_private.unlink(missing_ok=True)
    write_secret(tmp_private, pem)
    tmp_public = folder / f".{PUBLIC_FILE}.new"
    tmp_public.write_bytes(_public_pem(key.public_key()))
    os.replace(tmp_public, public)
    os.replace(tmp_private, private)
    return KeyPair(private, public, key_id(key.public_key()))


def _make_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)


def init_keys(folder: Path | None = None) -> KeyPair:
    """A new pair in ``folder``; refuses to overwrite one (rotate instead)."""
    folder = Path(folder or default_keys_dir())
    if (folder / PRIVATE_FILE).exists():
        raise SigningKeyError(
            f"{folder / PRIVATE_FILE} exists; use `granvae keys rotate` to replace it"
        )
    _make_folder(folder)
    return _write_pair(folder)


def rotate_keys(folder: Path | None = None) -> tuple[str, KeyPair]:
    """Retire the current pair (public key kept under retired/, private key deleted); new pair."""
    folder = Path(folder or default_keys_dir())
    old = load_private_key(folder / PRIVATE_FILE)
    old_id = key_id(old.public_key())
    retired = folder / RETIRED_DIR
    retired.mkdir(mode=0o700, exist_ok=True)
    (retired / f"{old_id}.pub.pem").write_bytes(_public_pem(old.public_key()))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (retired / f"{old_id}.retired").write_text(f"retired {stamp}\n", encoding="utf-8")
    pair = _write_pair(folder)  # os.replace drops the old private key's only copy
    return old_id, pair


def load_private_key(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(
            f"signing key {path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"signing key {path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
    return key


def signing_key(create: bool = True) -> Ed25519PrivateKey:
    """$GRANVAE_SIGNING_KEY, else the default folder's key (made on first use if ``create``)."""
    named = os.environ.get(SIGNING_KEY_ENV)
    if named:
        return load_private_key(Path(named))
    folder = default_keys_dir()
    if not (folder / PRIVATE_FILE).exists():
        if not create:
            raise SigningKeyError(f"no signing key: run `granvae keys init` (looked in {folder})")
        try:
            init_keys(folder)
        except FileExistsError:  # another export made it at the same moment
            pass
    return load_private_key(folder / PRIVATE_FILE)


def public_pem(key: Ed25519PrivateKey) -> bytes:
    """The PEM public key to hand to devices (``granvae-edge --trusted-key``)."""
    return _public_pem(key.public_key())


def sign_bundle(bundle_dir: Path, key: Ed25519PrivateKey | None = None) -> str:
    """Sign ``bundle_dir/manifest.json`` as it is on disk now; write manifest.sig; the key id."""
    key = key or signing_key()
    data = (Path(bundle_dir) / "manifest.json").read_bytes()
    doc = {
        "algorithm": ALGORITHM,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(data)).decode("ascii"),
    }
    target = Path(bundle_dir) / SIGNATURE_FILE
    tmp = target.with_name(f".{SIGNATURE_FILE}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return doc["key_id"]
