"""Ship the spool to the line's landing zone: a folder (a share) or an S3 bucket (landing_s3.py).

Landing zone layout:

    <dest>/objects/<sha256>.<ext>    every captured frame once, named by its content hash
    <dest>/records/<item_id>.json    its record (feedback included)
    <dest>/stream/<segment>.jsonl    compact records of every inspection
    <dest>/feedback/<id>-<n>.json    standalone operator verdicts

Rules that make a ship idempotent and resumable: a record is renamed ``.shipping`` (under the
feedback lock) before it is copied, so a verdict arriving meanwhile becomes a standalone file
instead of being lost; each file is copied to a temporary name, fsynced and renamed, then read
back and hashed; only when the landing zone's copy hashes equal to the spool's is the spool's
copy deleted. An object already in the landing zone with the right hash is not copied again,
so a ship repeated after an interruption copies nothing twice and loses nothing. Both kinds
of landing zone keep these rules behind one small interface (``put`` a file under a key,
confirmed; ``has_object`` by content hash).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .feedback import spool_lock
from .spool import SHIPPING_SUFFIX, TMP_SUFFIX, _fsync_dir


class ShipError(RuntimeError):
    """The landing zone did not confirm a copy; nothing of it was deleted from the spool."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_verified(src: Path, dst: Path, expected: str) -> bool:
    """Copy unless ``dst`` already holds ``expected``; True when bytes were copied."""
    if dst.exists() and sha256_of(dst) == expected:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + TMP_SUFFIX)
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dst)
    _fsync_dir(dst.parent)
    if sha256_of(dst) != expected:
        raise ShipError(f"{dst} does not hash to {expected} after the copy")
    return True


class Landing(Protocol):
    """Where ship puts files: keys are landing-zone paths such as ``objects/<sha>.png``."""

    def put(self, key: str, src: Path, sha256: str) -> bool:
        """Store ``src`` under ``key`` unless it is there with ``sha256``; True when bytes
        moved. Returns only once the landing zone confirmed the copy (else ShipError)."""
        ...

    def has_object(self, sha256: str) -> bool:
        """Is an image with this content hash already there (``objects/<sha256>.*``)?"""
        ...


@dataclass(frozen=True)
class FolderLanding:
    root: Path

    def put(self, key: str, src: Path, sha256: str) -> bool:
        return _copy_verified(src, self.root / key, sha256)

    def has_object(self, sha256: str) -> bool:
        return any((self.root / "objects").glob(f"{sha256}.*"))


def landing_for(dest: str | Path, endpoint_url: str | None = None) -> Landing:
    """``s3://bucket/prefix`` -> an S3 landing zone (boto3, the standard AWS credentials);
    anything else is a folder."""
    if str(dest).startswith("s3://"):
        from .landing_s3 import S3Landing  # boto3 only when shipping to a bucket

        return S3Landing.from_url(str(dest), endpoint_url)
    return FolderLanding(Path(dest))


@dataclass
class ShipReport:
    items: int = 0
    objects_copied: int = 0
    objects_already_there: int = 0
    records: int = 0
    segments: int = 0
    feedback: int = 0
    bytes_copied: int = 0
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def _claim_records(spool: Path) -> list[Path]:
    """Rename every finished record to ``.shipping`` (under the lock) and list them all."""
    items = spool / "items"
    with spool_lock(spool):
        for record in sorted(items.glob("*.json")):
            record.rename(record.with_name(record.name + SHIPPING_SUFFIX))
    return sorted(items.glob("*.json" + SHIPPING_SUFFIX))


def _ship_item(claimed: Path, dest: Landing, report: ShipReport) -> None:
    item_id = claimed.name.split(".", 1)[0]
    record = json.loads(claimed.read_text())
    images = [p for p in claimed.parent.glob(f"{item_id}.*") if not p.name.startswith(claimed.name)
              and not p.name.endswith(TMP_SUFFIX) and p.suffix != ".json"]  # fmt: skip
    expected = record.get("image_sha256")
    if images:
        image = images[0]
        if dest.put(f"objects/{expected}{image.suffix}", image, expected):
            report.objects_copied += 1
            report.bytes_copied += image.stat().st_size
        else:
            report.objects_already_there += 1
    elif not dest.has_object(expected):
        raise ShipError(f"item {item_id}: image missing from the spool and the landing zone")
    dest.put(f"records/{item_id}.json", claimed, sha256_of(claimed))
    report.records += 1
    for image in images:  # confirmed: the landing zone holds both
        image.unlink()
    claimed.unlink()
    report.items += 1


def _ship_files(folder: Path, pattern: str, dest: Landing, sub: str) -> tuple[int, int]:
    shipped = copied = 0
    for path in sorted(folder.glob(pattern)):
        size = path.stat().st_size
        if dest.put(f"{sub}/{path.name}", path, sha256_of(path)):
            copied += size
        path.unlink()
        shipped += 1
    return shipped, copied


def ship(spool: str | Path, dest: str | Path | Landing) -> ShipReport:
    """Move everything finished in ``spool`` to ``dest`` (a folder, ``s3://bucket/prefix``
    or a Landing); errors are per item and reported."""
    spool = Path(spool)
    if not (spool / "items").is_dir():
        raise ShipError(f"{spool} is not a capture spool (no items/ folder)")
    if isinstance(dest, (str, Path)):
        dest = landing_for(dest)
    if isinstance(dest, FolderLanding):
        dest.root.mkdir(parents=True, exist_ok=True)
    report = ShipReport()
    for claimed in _claim_records(spool):
        try:
            _ship_item(claimed, dest, report)
        except (OSError, ShipError, json.JSONDecodeError) as exc:
            report.errors.append(f"{claimed.name}: {exc}")
    for sub, pattern in (("stream", "*.jsonl"), ("feedback", "*.json")):
        try:
            n, copied = _ship_files(spool / sub, pattern, dest, sub)
        except (OSError, ShipError) as exc:
            report.errors.append(f"{sub}: {exc}")
            continue
        report.bytes_copied += copied
        setattr(report, "segments" if sub == "stream" else "feedback", n)
    return report
