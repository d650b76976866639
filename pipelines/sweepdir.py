"""Where a retrain's sweep lives, and the identity that makes a rerun find it again.

The folder name is derived from what determines the result (DVC md5 of the data, the
training settings, the granvae source), never from a clock: a rerun after a crash lands
in the same folder, `run_candidate` skips candidates whose evaluation.json exists, and
the tracking layer (which keys runs and versions on sweep.json's `sweep_id`) updates the
same MLflow runs and registers the same single version instead of a second one.

sweep.json follows docs/contracts.md ("Sweep folder"), as `granvae.sweep.run_sweep`
writes it; the flow writes it itself because it runs candidates as separate tasks.
"""

from __future__ import annotations

import hashlib
import json
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from granvae.sweep import SWEEP_FILE, Candidate

_CODE_VERSION: str | None = None


def code_version() -> str:
    """granvae's version plus a hash of its source: changed code never reuses old results."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        import granvae

        root = Path(granvae.__file__).resolve().parent
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
        try:
            version = metadata.version("granvae")
        except metadata.PackageNotFoundError:
            version = "0"
        _CODE_VERSION = f"{version}+{digest.hexdigest()[:12]}"
    return _CODE_VERSION


def sweep_key(md5: str, settings_digest: str, code: str) -> str:
    code_hash = hashlib.sha256(code.encode()).hexdigest()[:6]
    return f"{md5[:10]}-{settings_digest[:8]}-{code_hash}"


def write_sweep_meta(
    sweep_dir: Path,
    settings: dict[str, Any],
    data_dir: str,
    data_version: str,
    candidates: list[Candidate],
    workers: int | None,
) -> str:
    """Create or refresh sweep.json; a resumed sweep keeps its id and start time."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / SWEEP_FILE
    old = json.loads(path.read_text()) if path.exists() else {}
    meta = {
        "settings": settings,
        "data_dir": str(Path(data_dir).resolve()),
        "data_version": data_version,
        "candidates": [c.candidate_id for c in candidates],
        "workers": workers,
        "started": old.get("started") or time.time(),
        "sweep_id": old.get("sweep_id") or f"retrain-{sweep_dir.name}",
        "orchestrator": "prefect",
    }
    path.write_text(json.dumps(meta, indent=2))
    return meta["sweep_id"]


def mark_finished(sweep_dir: Path) -> None:
    path = sweep_dir / SWEEP_FILE
    meta = json.loads(path.read_text())
    meta["finished"] = time.time()
    path.write_text(json.dumps(meta, indent=2))


def failed_row(candidate: Candidate, reason: str) -> dict[str, Any]:
    """A candidate whose task itself died (worker lost): recorded, the sweep goes on."""
    return {
        "candidate_id": candidate.candidate_id,
        "objective": candidate.objective,
        "granularity": candidate.granularity,
        "beta": candidate.beta,
        "latent_dim": candidate.latent_dim,
        "seed": candidate.seed,
        "status": "failed",
        "reason": reason,
    }
