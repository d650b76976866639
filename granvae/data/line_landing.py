"""Turn what a line shipped into training and evaluation images, each with its origin.

Reads a landing zone (``granvae-edge ship``: records/, objects/, feedback/) and adds its images
to an MVTec-style folder (granvae.data.layout) that ``granvae retrain --landing`` reads:

- good: captured passes nobody reported as a missed defect, and rejects an operator overruled
  (``false_alarm``) -> ``train/good``, a seeded share ``eval_good_share`` -> ``test/good``;
- confirmed defects (``real_defect``, ``missed_defect`` with their class) -> ``test/<class>``:
  the evaluation set, so recall is measured on defects from the line itself;
- kept out, with counts: ``invalid`` frames, rejects nobody reviewed, images whose bytes are
  missing or do not match their record's hash, images that do not decode or whose size breaks
  the frame contract (``expect_hw``), and duplicates (same content hash).

Files are named by content hash, so ingesting the same landing zone twice adds nothing. Every
added image's origin (item, device, line, time, model, verdicts) is appended to
``<folder>/line_provenance.jsonl``; ``import_mvtec`` (the retrain's ingest) copies the rows of
the images it imports into the dataset store, which DVC versions (granvae.data.provenance).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from granvae.data.provenance import LANDING_PROVENANCE as PROVENANCE


def _destination(record: dict, verdicts: list[dict]) -> str | None:
    """'good', a defect class, or None (kept out) for one captured item."""
    kinds = {v.get("verdict"): v for v in verdicts}
    for kind in ("real_defect", "missed_defect"):
        if kind in kinds:
            return str(kinds[kind]["defect_class"])
    if record.get("verdict") == "pass" or "false_alarm" in kinds:
        return "good" if record.get("verdict") != "invalid" else None
    return None


def _frame_ok(path: Path, expect_hw: tuple[int, int] | None) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
            hw = (im.height, im.width)
    except (OSError, UnidentifiedImageError):
        return False
    return expect_hw is None or hw == tuple(expect_hw)


def _reason_out(record: dict, obj: Path | None, expect_hw) -> str | None:
    if record.get("verdict") == "invalid":
        return "invalid_frame"
    if obj is None:
        return "missing_image"
    if hashlib.sha256(obj.read_bytes()).hexdigest() != record.get("image_sha256"):
        return "hash_mismatch"
    if not _frame_ok(obj, expect_hw):
        return "breaks_frame_contract"
    return None


def ingest_landing(
    landing: str | Path, folder: str | Path, expect_hw: tuple[int, int] | None = None,
    eval_good_share: float = 0.2, seed: int = 0,
) -> dict[str, object]:  # fmt: skip
    """Add the landing zone's usable images to ``folder``; returns the counts by outcome."""
    landing, folder = Path(landing), Path(folder)
    if not (landing / "records").is_dir():
        raise ValueError(f"{landing}: no records/ folder (is this a landing zone?)")
    feedback: dict[str, list[dict]] = {}
    for path in sorted((landing / "feedback").glob("*.json")):
        entry = json.loads(path.read_text())
        feedback.setdefault(entry["item_id"], []).append(entry)
    rng, counts, added = random.Random(seed), Counter(), []
    seen: set[str] = set()
    for path in sorted((landing / "records").glob("*.json")):
        record = json.loads(path.read_text())
        verdicts = record.get("feedback", []) + feedback.get(path.stem, [])
        objects = sorted((landing / "objects").glob(f"{record.get('image_sha256')}.*"))
        reason = _reason_out(record, objects[0] if objects else None, expect_hw)
        target = None if reason else _destination(record, verdicts)
        if reason or target is None:
            counts[reason or "unreviewed_reject"] += 1
            continue
        sha, obj = record["image_sha256"], objects[0]
        if sha in seen:
            counts["duplicate"] += 1
            continue
        seen.add(sha)
        split = "test" if target != "good" or rng.random() < eval_good_share else "train"
        dest = folder / split / target / f"line-{sha[:16]}{obj.suffix}"
        if dest.exists():
            counts["already_ingested"] += 1
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(obj.read_bytes())
        counts[f"{split}/{target}"] += 1
        added.append({"file": dest.relative_to(folder).as_posix(), "item_id": path.stem,
                      "device": record.get("device"), "line": record.get("line"),
                      "time": record.get("t"), "model_sha256": record.get("model_sha256"),
                      "revision": record.get("revision"), "verdict": record.get("verdict"),
                      "feedback": verdicts, "image_sha256": sha})  # fmt: skip
    if added:
        with open(folder / PROVENANCE, "a") as fh:
            fh.writelines(json.dumps(row, sort_keys=True) + "\n" for row in added)
    return {"added": len(added), **dict(sorted(counts.items()))}
