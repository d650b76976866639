"""Re-tune the decision threshold on a line's own good images, without re-exporting.

Lighting, fixtures and part batches drift; the false-alarm rate that matters is the one on this
line. The threshold lives in the manifest, not in the graph, so calibrating writes a new manifest
revision and leaves model.onnx (and its hash) untouched. Every revision is kept on disk as
``manifest.r<N>.json`` and summarised in ``previous_revisions``, so a bad re-tune is one copy
away from being undone.

Method (distribution-free order statistic): with n good scores sorted ascending and target
false-alarm rate f, the threshold is the k-th smallest score, k = ceil((1 - f) * n). Since the
decision is ``score > threshold``, at most n - k <= f * n calibration images are flagged, so the
observed false-alarm rate on them is <= f. With n < 1/f no order statistic can express f, so the
maximum is used and the manifest says so.

A signed bundle's manifest can only change with a key the device trusts (the threshold is what
an attacker would change), so on a device with trusted keys calibration needs ``--signing-key``
and re-signs the new revision; without trusted keys a stale signature is removed, not kept.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .manifest import MANIFEST_FILE, read_manifest, validate_manifest, write_json_atomic
from .signature import SIGNATURE_FILE, TrustStore, key_id, load_private_key, sign_bytes


class CalibrationError(ValueError):
    """Calibration cannot produce a trustworthy threshold."""


@dataclass(frozen=True)
class ThresholdChoice:
    value: float
    k: int
    n: int
    method: str
    note: str | None


def order_statistic_threshold(scores: list[float] | np.ndarray, far: float) -> ThresholdChoice:
    """The ceil((1-far)*n)-th smallest score, or the max when n < 1/far."""
    if not 0.0 < far < 1.0:
        raise CalibrationError(f"false-alarm rate must be in (0, 1), got {far}")
    values = np.sort(np.asarray(scores, dtype=np.float64))
    n = int(values.size)
    if n == 0:
        raise CalibrationError("no good images could be scored; nothing to calibrate on")
    if not np.all(np.isfinite(values)):
        raise CalibrationError("some calibration scores are not finite")
    # n - floor(far * n) == ceil((1 - far) * n) exactly; the epsilon absorbs 0.29 * 100 = 28.99..
    k = n - math.floor(far * n + 1e-9)
    method = f"order_statistic: threshold = {k}-th smallest of {n} good scores, k = ceil((1-far)*n)"
    note = None
    if n * far < 1.0 - 1e-9:
        k = n
        method = f"order_statistic: max of {n} good scores (n < 1/far)"
        note = (
            f"only {n} images for false_alarm_rate {far}: need at least {math.ceil(1 / far - 1e-9)}"
            " for an order statistic; the maximum good score is used (conservative)"
        )
    return ThresholdChoice(value=float(values[k - 1]), k=k, n=n, method=method, note=note)


def observed_false_alarm_rate(scores: list[float] | np.ndarray, threshold: float) -> float:
    values = np.asarray(scores, dtype=np.float64)
    return float(np.mean(values > threshold)) if values.size else 0.0


def new_revision(
    manifest: dict[str, Any],
    choice: ThresholdChoice,
    far: float,
    calibrated_on: str,
    observed_far: float,
    skipped: int = 0,
    revision: int | None = None,
) -> dict[str, Any]:
    """Return the next manifest revision (``revision`` or current + 1); input not modified."""
    old_rev = int(manifest["revision"])
    old_threshold = dict(manifest["threshold"])
    threshold = {
        "value": choice.value,
        "previous_value": old_threshold.get("value"),
        "score": old_threshold.get("score", "neg_elbo"),
        "false_alarm_rate": far,
        "observed_false_alarm_rate": observed_far,
        "calibrated_on": calibrated_on,
        "n_images": choice.n,
        "n_skipped": skipped,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(),
        "method": choice.method,
    }
    if choice.note:
        threshold["note"] = choice.note
    previous = list(manifest.get("previous_revisions", []))
    previous.append(
        {
            "revision": old_rev,
            "manifest_file": revision_file_name(old_rev),
            "threshold": old_threshold,
        }
    )
    updated = dict(manifest)
    updated.update(
        revision=revision or old_rev + 1, threshold=threshold, previous_revisions=previous
    )
    return validate_manifest(updated)


def revision_file_name(revision: int) -> str:
    return f"manifest.r{revision}.json"


def next_revision_number(bundle_dir: Path, manifest: dict[str, Any]) -> int:
    """One past every revision seen, so a rolled-back bundle never reuses a kept number."""
    seen = [int(manifest["revision"])]
    seen += [int(r.get("revision", 0)) for r in manifest.get("previous_revisions", [])]
    for path in Path(bundle_dir).glob("manifest.r*.json"):
        number = path.name[len("manifest.r") : -len(".json")]
        if number.isdigit():
            seen.append(int(number))
    return max(seen) + 1


def signing_key_for(path: str | None, trust: TrustStore | None) -> Ed25519PrivateKey | None:
    """The key that re-signs a calibrated manifest; required, and trusted, when keys are trusted."""
    if path is None:
        if trust is not None:
            raise CalibrationError(
                "this device trusts signing keys: a new threshold must be signed too "
                "(pass --signing-key with a key the device trusts)"
            )
        return None
    key = load_private_key(Path(path))
    if trust is not None and key_id(key.public_key()) not in trust.keys:
        raise CalibrationError(f"--signing-key {path} is not one of the device's trusted keys")
    return key


def _sign_or_drop(bundle_dir: Path, signing_key: Ed25519PrivateKey | None) -> None:
    """Re-sign the live manifest, or remove a signature that no longer matches it."""
    sig_path = bundle_dir / SIGNATURE_FILE
    if signing_key is None:
        sig_path.unlink(missing_ok=True)
        return
    doc = sign_bytes(signing_key, (bundle_dir / MANIFEST_FILE).read_bytes())
    write_json_atomic(sig_path, doc)


def write_revision(
    bundle_dir: Path, updated: dict[str, Any], signing_key: Ed25519PrivateKey | None = None
) -> Path:
    """Keep the current manifest as manifest.r<N>.json, then atomically install the new one.

    The old copy is written first: if anything fails in between, the live manifest is still the
    old one and nothing is lost. The new manifest is then signed with ``signing_key`` (a device
    with trusted keys refuses it until the signature lands, so no window scores with it unsigned).
    """
    bundle_dir = Path(bundle_dir)
    current = read_manifest(bundle_dir)
    if current["model_sha256"] != updated["model_sha256"]:
        raise CalibrationError("refusing to write a revision for a different model")
    keep = bundle_dir / revision_file_name(int(current["revision"]))
    tmp = keep.with_name(f".{keep.name}.tmp")
    try:
        shutil.copyfile(bundle_dir / MANIFEST_FILE, tmp)
        tmp.replace(keep)
    except BaseException:  # disk full mid-copy: no half file left in the bundle folder
        tmp.unlink(missing_ok=True)
        raise
    write_json_atomic(bundle_dir / MANIFEST_FILE, updated)
    _sign_or_drop(bundle_dir, signing_key)
    return keep
