"""Where a retrain's sweep lives, and the identity that makes a rerun find it again.

The folder name is derived from what determines the result (DVC md5 of the data, the
training settings, the granvae source), never from a clock: a rerun after a crash lands
in the same folder, `run_candidate` skips candidates whose evaluation.json exists, and
the tracking layer (which keys runs and versions on sweep.json's `sweep_id`) updates the
same MLflow runs and registers the same single version instead of a second one.

sweep.json itself is written by granvae.sweep.begin_sweep / finish_sweep, the same
functions `run_sweep` uses, so the flow's sweep folders are ordinary sweep folders.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

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
