"""Where a stored image came from, kept inside the dataset store so DVC versions it with it.

An MVTec-style folder filled by ``granvae ingest-line`` carries ``line_provenance.jsonl``: one
row per image it added (device, line, time, model sha and bundle revision, the device's
verdict, the operators' verdicts). ``import_mvtec`` copies the rows of the images it imports
into the store as ``provenance.jsonl`` (one canonical line per image, sorted by file name),
and the manifest pins the file's sha256 like a shard's. The retrain flow ``dvc add``s the
store, so the origin of every line image is versioned with the image itself, and
``read_provenance`` refuses a file that no longer matches the manifest.

Rows are keyed by the image's path relative to the folder (``train/good/line-<sha>.png``),
which is also what the store records as the image's name (``Split.names``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from granvae.data.base import DataValidationError

LANDING_PROVENANCE = "line_provenance.jsonl"  # in the folder, appended by ingest-line
STORE_PROVENANCE = "provenance.jsonl"  # in the dataset store, listed in manifest.json


def folder_rows(root: str | Path, names: Iterable[str]) -> list[dict[str, Any]]:
    """The folder's provenance rows for the images named (the latest row per file wins);
    [] when the folder has no provenance file. A malformed row is an error naming its line."""
    path = Path(root) / LANDING_PROVENANCE
    if not path.is_file():
        return []
    wanted, rows = set(names), {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataValidationError([(f"{path}:{n}", f"not a JSON row ({exc.msg})")]) from exc
        if not isinstance(row, dict) or not isinstance(row.get("file"), str):
            raise DataValidationError([(f"{path}:{n}", "row has no 'file' field")])
        if row["file"] in wanted:
            rows[row["file"]] = row
    return [rows[name] for name in sorted(rows)]


def rows_bytes(rows: list[dict[str, Any]]) -> bytes:
    """Canonical bytes (sorted keys, one row a line): same rows, same DVC md5."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode("utf-8")


def manifest_entry(data: bytes, n_rows: int) -> dict[str, Any]:
    return {"file": STORE_PROVENANCE, "rows": n_rows,
            "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip


def check_file(directory: str | Path, entry: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems with the store's provenance file against its manifest entry ([] if fine)."""
    path = Path(directory) / STORE_PROVENANCE
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [(STORE_PROVENANCE, f"unreadable ({exc})")]
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.get("sha256"):
        return [(STORE_PROVENANCE, f"sha256 mismatch: manifest {entry.get('sha256')}, "
                                   f"file {digest}")]  # fmt: skip
    return []


def read_provenance(directory: str | Path) -> dict[str, dict[str, Any]]:
    """Image name -> its origin row, verified against the store's manifest ({} if none)."""
    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    entry = manifest.get("provenance")
    if entry is None:
        return {}
    problems = check_file(directory, entry)
    if problems:
        raise DataValidationError(problems)
    lines = (directory / STORE_PROVENANCE).read_text(encoding="utf-8").splitlines()
    return {row["file"]: row for row in map(json.loads, lines)}
