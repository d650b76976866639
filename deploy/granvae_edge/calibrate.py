"""Re-tune the decision threshold on a line's own good images, without re-exporting.

Lighting, fixtures and part batches drift; the false-alarm rate that matters is the one on this
line. The threshold lives in the manifest, not in the graph, so calibrating writes a new manifest
revision and leaves model.onnx (and its hash) untouched. Every revision is kept on disk as
``manifest.r<N>.json`` and summarised in ``previous_revisions``, so a bad re-tune is one copy
away from being undone.

Method (conformal order statistic, the same rule as granvae.metrics.thresholds): with n good
scores sorted ascending and target false-alarm rate f, the threshold is the k-th smallest score,
k = ceil((1 - f)(n + 1)). A new good part exceeds it with probability (n + 1 - k)/(n + 1) <= f,
so the promise holds on the line, not only on the calibration images. The line's rate of one
calibration is Beta(n + 1 - k, k) distributed; the manifest carries its 95% upper bound. With
n + 1 < 1/f no order statistic keeps the promise: the maximum is used and the manifest says so.

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


_CEIL_EPS = 1e-9  # (1 - 0.01) * 100 == 99.00000000000001 in floats must give k = 99
UPPER_CONFIDENCE = 0.95


def conformal_rank(n: int, far: float) -> int:
    """k = ceil((1 - far)(n + 1)), clamped to n (twin of granvae.metrics.thresholds)."""
    return min(int(n), int(math.ceil((1.0 - far) * (n + 1) - _CEIL_EPS)))


def _log_binom_tail(n: int, p: float, k: int) -> float:
    """log P(Binomial(n, p) >= k) in log space (no scipy on the edge)."""
    if k <= 0 or p >= 1.0:
        return 0.0
    if p <= 0.0:
        return -math.inf
    lp, lq = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq
        for j in range(k, n + 1)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def false_alarm_upper_bound(n: int, k: int, confidence: float = UPPER_CONFIDENCE) -> float:
    """Upper ``confidence`` bound on the line's false-alarm rate, Beta(n + 1 - k, k):
    P(rate > u) = P(Binomial(n, 1 - u) >= k), solved for u by bisection."""
    target = math.log1p(-confidence)
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if _log_binom_tail(n, 1.0 - mid, k) > target:
            lo = mid
        else:
            hi = mid
    return hi


def order_statistic_threshold(scores: list[float] | np.ndarray, far: float) -> ThresholdChoice:
    """The k-th smallest score, k = ceil((1 - far)(n + 1)); the max when n + 1 < 1/far."""
    if not 0.0 < far < 1.0:
        raise CalibrationError(f"false-alarm rate must be in (0, 1), got {far}")
    values = np.sort(np.asarray(scores, dtype=np.float64))
    n = int(values.size)
    if n == 0:
        raise CalibrationError("no good images could be scored; nothing to calibrate on")
    if not np.all(np.isfinite(values)):
        raise CalibrationError("some calibration scores are not finite")
    k = conformal_rank(n, far)
    method = (
        f"conformal_order_statistic: threshold = {k}-th smallest of {n} good scores, "
        "k = ceil((1-far)*(n+1))"
    )
    note = None
    if math.ceil((1.0 - far) * (n + 1) - _CEIL_EPS) > n:
        method = f"conformal_order_statistic: max of {n} good scores (n + 1 < 1/far)"
        note = (
            f"only {n} images for false_alarm_rate {far}: need at least "
            f"{math.ceil(1 / far - 1 - _CEIL_EPS)} for the guarantee; the maximum good score is "
            "used and the line's rate may exceed the target"
        )
    return ThresholdChoice(value=float(values[k - 1]), k=k, n=n, method=method, note=note)


def guarantee(choice: ThresholdChoice, far: float) -> dict[str, Any]:
    """What the threshold promises about new good parts (the same words as granvae's)."""
    n, k = choice.n, choice.k
    expected = (n + 1 - k) / (n + 1)
    if choice.note is None:
        text = (
            f"expected false-alarm rate on new good parts <= {far:g} "
            f"(= {expected:.4g}; conformal rank k={k} of n={n})"
        )
    else:
        text = f"NOT guaranteed: {choice.note}"
    return {
        "rank": k,
        "guarantee": text,
        "expected_false_alarm_rate": expected,
        "false_alarm_rate_upper_95": false_alarm_upper_bound(n, k),
    }


def calibration_flag_rate(scores: list[float] | np.ndarray, threshold: float) -> float:
    """Share of the calibration images above the threshold (<= far by construction: it says
    nothing about the line's rate, which is the guarantee's job)."""
    values = np.asarray(scores, dtype=np.float64)
    return float(np.mean(values > threshold)) if values.size else 0.0


def new_revision(
    manifest: dict[str, Any],
    choice: ThresholdChoice,
    far: float,
    calibrated_on: str,
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
        "calibrated_on": calibrated_on,
        "n_images": choice.n,
        "n_skipped": skipped,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(),
        "method": choice.method,
        **guarantee(choice, far),
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
