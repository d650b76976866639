"""Which code and which exact params made a run: recorded beside the data version.

Why: a registered version must be rebuildable. The data version names the images; this
names the project's code (git sha of the working copy granvae runs from, plus whether it
had uncommitted changes) and the resolved params (profile and overrides applied), so
`git checkout <code_commit>` + the data repository + `params.resolved.yaml` is the recipe.
When granvae runs from an installed wheel (no git working copy), a hash of its source
stands in for the sha.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # .../granvae
CODE_COMMIT = "granvae.code_commit"
CODE_DIRTY = "granvae.code_dirty"
CODE_VERSION = "granvae.code_version"
PARAMS_FILE = "params.resolved.yaml"
PROVENANCE_DIR = "provenance"


def _git(*args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    proc = subprocess.run(
        [git, "-C", str(PACKAGE_ROOT.parent), *args], capture_output=True, text=True, timeout=30
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    try:
        version = metadata.version("granvae")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"{version}+{digest.hexdigest()[:12]}"


@lru_cache(maxsize=1)
def code_tags() -> dict[str, str]:
    """{code_commit, code_dirty, code_version}; commit "unknown" outside a git working copy."""
    top = _git("rev-parse", "--show-toplevel")
    inside = top is not None and (PACKAGE_ROOT.parent.resolve() == Path(top).resolve())
    commit = _git("rev-parse", "HEAD") if inside else None
    status = _git("status", "--porcelain", "--untracked-files=no") if inside else None
    return {
        CODE_COMMIT: commit or "unknown",
        CODE_DIRTY: "unknown" if status is None else str(bool(status)).lower(),
        CODE_VERSION: _source_hash(),
    }


def write_params(tree: dict[str, Any], folder: Path) -> Path:
    """The resolved params tree as YAML (what a rebuild must use, nothing looked up later)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PARAMS_FILE
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path
