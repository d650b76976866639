"""The device's spool: captured images and their records on disk, bounded, power-cut safe.

Layout (docs/line-loop.md):

    <spool>/items/<item_id>.<ext>     the frame exactly as the camera sent it
    <spool>/items/<item_id>.json      its record (written after the image: a record means done)
    <spool>/stream/<segment>.jsonl    compact records of every inspection, one segment per flush
    <spool>/feedback/<id>-<n>.json    operator verdicts for items no longer in the spool

Every file is written to a temporary name, fsynced, renamed into place and the folder fsynced,
so a power cut leaves either the whole file or none; a leftover temporary file or an image
without its record (the cut came between the two) is removed when the spool is opened.

Bounds are on the items (bytes and files). A new item that does not fit first evicts the
oldest captured passes; rejects and invalid frames are never evicted, and when passes alone
cannot make room the new item is dropped and counted. Items leave only by ``ship``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
RESCAN_SECONDS = 2.0
SHIPPING_SUFFIX = ".shipping"  # a record being shipped (ship.py renames it first)
_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"BM", ".bmp"),
          (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))  # fmt: skip


def image_suffix(data: bytes) -> str:
    """The file extension of encoded image bytes, from their magic number (.bin if unknown)."""
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), ".bin")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """tmp + fsync + rename + fsync(folder): the file is whole or absent after a power cut."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, (json.dumps(obj, sort_keys=True) + "\n").encode("utf-8"))


@dataclass(frozen=True)
class SpoolBounds:
    max_bytes: int = 2 * 1024**3
    max_files: int = 20_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_files < 1:
            raise ValueError(f"spool bounds must be >= 1, got {self}")


class Spool:
    """The folder plus its accounting; thread-safe; the capture writer is its only writer."""

    def __init__(self, root: str | Path, bounds: SpoolBounds | None = None) -> None:
        self.root = Path(root)
        self.bounds = bounds or SpoolBounds()
        self.items, self.stream, self.feedback = (
            self.root / "items", self.root / "stream", self.root / "feedback"
        )  # fmt: skip
        for folder in (self.items, self.stream, self.feedback):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.dropped: Counter[str] = Counter()  # new items not kept, by verdict
        self.evicted: Counter[str] = Counter()  # kept items removed to make room, by verdict
        self.recovered = self._recover()
        self._bytes, self._files, self._passes = self._scan()

    # --- opening ----------------------------------------------------------------------------
    def _recover(self) -> int:
        """Remove what a power cut left half-done: temp files and images without a record."""
        removed = 0
        for folder in (self.items, self.stream, self.feedback):
            for tmp in folder.glob("*" + TMP_SUFFIX):
                tmp.unlink(missing_ok=True)
                removed += 1
        for image in self.items.iterdir():
            if image.suffix in (".json", SHIPPING_SUFFIX):
                continue
            stem = image.name.split(".", 1)[0]
            if not (self.items / f"{stem}.json").exists() and not (
                self.items / f"{stem}.json{SHIPPING_SUFFIX}"
            ).exists():
                image.unlink(missing_ok=True)
                removed += 1
        return removed

    def _scan(self) -> tuple[int, int, list[str]]:
        """Bytes and item count on disk, and the captured passes oldest first (ids sort by time)."""
        total, count, passes = 0, 0, []
        self._scanned_at = time.monotonic()
        for record in sorted(self.items.glob("*.json")):
            try:
                meta = json.loads(record.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            total += int(meta.get("image_bytes", 0)) + record.stat().st_size
            count += 1
            if meta.get("verdict") == "pass":
                passes.append(record.stem)
        return total, count, passes

    # --- items ------------------------------------------------------------------------------
    def usage(self) -> dict[str, int]:
        with self._lock:
            return {"bytes": self._bytes, "files": self._files}

    def _over(self, size: int) -> bool:
        return self._bytes + size > self.bounds.max_bytes or self._files + 1 > self.bounds.max_files

    def _remove_item(self, item_id: str) -> int:
        freed = 0
        for path in self.items.glob(f"{item_id}.*"):
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                pass
        return freed

    def _make_room(self, size: int) -> bool:
        """Evict oldest passes until ``size`` more bytes and one more item fit (lock held).

        ``ship`` runs in another process and frees room behind our back: when the accounting
        says full, count again from disk first (at most every RESCAN_SECONDS).
        """
        if self._over(size) and time.monotonic() - self._scanned_at >= RESCAN_SECONDS:
            self._bytes, self._files, self._passes = self._scan()
        while self._over(size):
            if not self._passes:
                return False
            victim = self._passes.pop(0)
            if not (self.items / f"{victim}.json").exists():
                continue  # ship has it (claimed or gone); a rescan will count it out
            self._bytes -= self._remove_item(victim)
            self._files -= 1
            self.evicted["pass"] += 1
        return True

    def add_item(self, item_id: str, image: bytes, record: dict[str, Any]) -> bool:
        """Write the image then its record, atomically; False (and counted) if it cannot fit."""
        verdict = str(record.get("verdict"))
        body = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        size = len(image) + len(body)
        with self._lock:
            if size > self.bounds.max_bytes or not self._make_room(size):
                self.dropped[verdict] += 1
                return False
            atomic_write(self.items / f"{item_id}{image_suffix(image)}", image)
            atomic_write(self.items / f"{item_id}.json", body)
            self._bytes += size
            self._files += 1
            if verdict == "pass":
                self._passes.append(item_id)
        return True

    def write_segment(self, name: str, lines: list[dict[str, Any]]) -> Path:
        """One flush of compact records: a whole JSON-lines file or nothing."""
        path = self.stream / f"{name}.jsonl"
        atomic_write(path, "".join(json.dumps(x, sort_keys=True) + "\n" for x in lines).encode())
        return path
