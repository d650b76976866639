"""Which project (and so which params.yaml and embedded MLflow store) a command uses.

Why walk up: a command started in a subfolder of a project (its `runs/`, a notebook
folder) used to miss the project's params.yaml and open a new, empty `mlflow.db` right
there, listing 0 models without saying where it looked. Like git, granvae now looks in
the working folder and then in each parent for a project marker; the first folder that
has one is the project. Outside any project the working folder is used, and commands
that only read a store refuse to create one there (`require_store`).
"""

from __future__ import annotations

import os
from pathlib import Path

MARKERS = ("params.yaml", ".granvae", "mlflow.db")  # any one makes a folder a project
DB_FILE = "mlflow.db"  # the embedded store's file (granvae.tracking.store uses the same)


def find_project(start: Path | str | None = None) -> Path | None:
    """The nearest folder at or above `start` (default: the working folder) with a marker."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in MARKERS):
            return folder
    return None


def project_root(start: Path | str | None = None) -> Path:
    """The project folder, or the working folder when there is none (a fresh project)."""
    return find_project(start) or Path(start or Path.cwd()).resolve()


def project_params(start: Path | str | None = None) -> Path | None:
    """The project's params.yaml, if the project has one."""
    root = find_project(start)
    path = root / "params.yaml" if root else None
    return path if path and path.is_file() else None


class NoStoreHere(FileNotFoundError):
    """A read-only command found no store: it says where it looked instead of making one."""


def require_store(uri: str, start: Path | str | None = None) -> None:
    """Refuse an embedded sqlite store that does not exist yet (reading would create it)."""
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri.removeprefix("sqlite:///"))
    if db.is_file():
        return
    here = Path(start or Path.cwd()).resolve()
    looked = ", ".join(str(p) for p in (here, *here.parents))
    raise NoStoreHere(
        f"no granvae project here: looked for {' / '.join(MARKERS)} in {looked}; "
        f"no MLflow store at {db}. Run this inside a project (where `granvae retrain` "
        "ran), or point at a store: MLFLOW_TRACKING_URI=... or --set tracking.uri=..."
    )


def portable_path(path: Path | str, base: Path | str) -> str:
    """How a record in `base` (a sweep folder) names `path`: relative to `base` when both
    lie in one project, so the project can be moved or renamed (`mv ~/proj ~/proj2`) and
    the record still finds its data; absolute when `path` lies outside the project."""
    path, base = Path(path).resolve(), Path(base).resolve()
    root = find_project(base)
    if root is None or not path.is_relative_to(root):
        return str(path)
    return os.path.relpath(path, base)


def recorded_path(value: str | None, base: Path | str) -> Path | None:
    """The absolute path a record in `base` names (portable_path's inverse; absolute
    paths, as older records and outside-project paths have them, pass through)."""
    if not value:
        return None
    return (Path(base) / value).resolve() if not Path(value).is_absolute() else Path(value)
