"""A moved or copied project keeps working: the embedded store's paths follow its folder.

Why: MLflow's sqlite store records absolute locations (`file:///home/u/proj/mlartifacts/...`
for experiments, runs, model versions, logged models). After `mv ~/proj ~/proj2` the
registry still listed the model but every artifact read (`granvae-edge pull` through
`granvae ui`, promotion's comparison) looked in the old folder, and the next
retrain silently recreated `~/proj/mlartifacts` and wrote there. A copy (`cp -r`) was worse:
it wrote into the original's folder.

How: the embedded store always keeps its artifacts in `<db folder>/mlartifacts`
(granvae.tracking.store), so an experiment `<name>` located at `file://<P>/mlartifacts/<name>`
with P not the db's folder says the project was moved (or copied) from P. Then every
location column that starts with `P/` (as a `file://` URI, percent-encoded or not, or a
plain path) is rewritten to the db's folder, in one transaction, and one line says so.
Locations outside P (a user's own artifact root, `mlflow-artifacts:/`, s3://) are never
touched, nor are params and tags (they record what ran, where it ran). Only the embedded
store is relocated: a server's store (http, postgres) is not ours to rewrite.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

ARTIFACTS_DIR = "mlartifacts"  # granvae.tracking.store keeps the same name
# (table, column, extra condition): where MLflow 3 keeps artifact locations.
LOCATIONS = (
    ("experiments", "artifact_location", ""),
    ("runs", "artifact_uri", ""),
    ("model_versions", "source", ""),
    ("model_versions", "storage_location", ""),
    ("logged_models", "artifact_location", ""),
    ("trace_tags", "value", "AND key = 'mlflow.artifactLocation'"),
)
BUSY_TIMEOUT_S = 30.0


def experiment_folder(name: str) -> str:
    """The folder under mlartifacts/ granvae gives experiment `name` (Store.experiment_id)."""
    return name.replace("/", "_")


def _local_path(location: str | None) -> Path | None:
    """The folder a `file:` URI or plain absolute path names; None for anything remote."""
    if not location:
        return None
    if location.startswith("file:"):
        return Path(unquote(urlparse(location).path))
    return Path(location) if location.startswith("/") else None


def old_roots(conn: sqlite3.Connection, root: Path) -> list[Path]:
    """Folders the store's granvae experiments say it lived in, other than `root`.

    Only a location granvae itself gives an experiment counts (`<P>/mlartifacts/<name>`,
    the experiment's own name): a user's experiment elsewhere never defines a move."""
    found = set()
    for name, location in conn.execute("SELECT name, artifact_location FROM experiments"):
        path = _local_path(location)
        if path is None or path.name != experiment_folder(str(name)):
            continue
        if path.parent.name == ARTIFACTS_DIR and path.parent.parent != root:
            found.add(path.parent.parent)
    return sorted(found)


def _prefix_pairs(old: Path, new: Path) -> list[tuple[str, str]]:
    """Old -> new prefixes in every spelling MLflow stores (URI encoded, raw, plain path)."""
    pairs = {
        (old.as_uri() + "/", new.as_uri() + "/"),
        (f"file://{old}/", f"file://{new}/"),
        (f"{old}/", f"{new}/"),
    }
    return sorted(pairs, key=lambda p: -len(p[0]))  # longest first: no double rewrite


def _columns(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """The LOCATIONS this store's schema has (older MLflow schemas lack some tables)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    out = []
    for table, column, where in LOCATIONS:
        if table in tables:
            names = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            if column in names:
                out.append((table, column, where))
    return out


def rewrite(conn: sqlite3.Connection, old: Path, new: Path) -> int:
    """Rewrite locations under `old` to `new`; returns the rows changed (no commit here)."""
    changed = 0
    for table, column, where in _columns(conn):
        for before, after in _prefix_pairs(old, new):
            cur = conn.execute(
                f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                f"WHERE substr({column}, 1, ?) = ? {where}",
                (after, len(before) + 1, len(before), before),
            )
            changed += cur.rowcount
    return changed


def relocate_store(db: Path | str, announce: bool = True) -> int:
    """If the store at `db` was moved or copied, point its paths at its folder now.

    Cheap when nothing moved (one read of the experiments table). The rewrite runs under
    sqlite's write lock, re-checked inside it, so workers opening the store at once rewrite
    once. Returns the number of rows rewritten (0: nothing moved, or no store yet).
    """
    db = Path(db)
    if not db.is_file():
        return 0
    root = db.parent.resolve()
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S,
                           isolation_level=None)  # fmt: skip
    try:
        if not _has_experiments(conn) or not old_roots(conn, root):
            return 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            olds = old_roots(conn, root)
            changed = sum(rewrite(conn, old, root) for old in olds)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    if announce and changed:
        moved = ", ".join(str(o) for o in olds)
        print(f"project moved from {moved} to {root}: rewrote {changed} paths in {db.name}",
              file=sys.stderr, flush=True)  # fmt: skip
    return changed


def _has_experiments(conn: sqlite3.Connection) -> bool:
    """False for an empty file (a store MLflow has not created its tables in yet)."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='experiments'"
    ).fetchone()
    return row is not None
