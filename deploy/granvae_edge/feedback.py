"""Operator verdicts on inspected items: real defect (with its class), false alarm, missed defect.

A verdict joins the item's record when the item is still in the spool (the record is rewritten
atomically, its ``feedback`` list growing); an item already shipped, or never captured (a pass
the coin did not keep, found defective later), gets a standalone file in ``<spool>/feedback/``
that ships like the rest. Writers (the server's POST /feedback, the CLI, ship's hand-over)
serialise on one lock file, so no verdict is lost between a read and a rewrite.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .spool import write_json

KINDS = ("real_defect", "false_alarm", "missed_defect")
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
LOCK_NAME = "feedback.lock"


class FeedbackError(ValueError):
    """A verdict that cannot be recorded; the message names the field."""


@contextlib.contextmanager
def spool_lock(spool: Path) -> Iterator[None]:
    """Exclusive lock over the spool's records, across processes (flock)."""
    with open(Path(spool) / LOCK_NAME, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def check_verdict(payload: dict[str, Any]) -> dict[str, Any]:
    """The verdict as stored, or FeedbackError naming the bad field."""
    if not isinstance(payload, dict):
        raise FeedbackError("feedback must be a JSON object")
    item_id = payload.get("item_id")
    if not isinstance(item_id, str) or not _ID.match(item_id) or ".." in item_id:
        raise FeedbackError(f"item_id: not an item id: {item_id!r}")
    kind = payload.get("verdict")
    if kind not in KINDS:
        raise FeedbackError(f"verdict: must be one of {', '.join(KINDS)}, got {kind!r}")
    defect_class = payload.get("defect_class")
    if kind != "false_alarm" and not (isinstance(defect_class, str) and defect_class.strip()):
        raise FeedbackError(f"defect_class: required for verdict {kind}")
    if kind == "false_alarm" and defect_class is not None:
        raise FeedbackError("defect_class: a false alarm has no defect class")
    operator = payload.get("operator")
    if operator is not None and not isinstance(operator, str):
        raise FeedbackError("operator: must be a string")
    return {"verdict": kind, "defect_class": defect_class, "operator": operator,
            "t": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}  # fmt: skip


def record_feedback(spool: str | Path, payload: dict[str, Any]) -> dict[str, Any]:
    """Store one verdict; returns {"item_id", "stored": "record"|"standalone", "path"}."""
    entry = check_verdict(payload)
    spool = Path(spool)
    item_id = payload["item_id"]
    if not (spool / "items").is_dir():
        raise FeedbackError(f"spool: {spool} is not a capture spool (no items/ folder)")
    record_path = spool / "items" / f"{item_id}.json"
    with spool_lock(spool):
        if record_path.exists():
            record = json.loads(record_path.read_text())
            record.setdefault("feedback", []).append(entry)
            write_json(record_path, record)
            return {"item_id": item_id, "stored": "record", "path": str(record_path)}
        folder = spool / "feedback"
        folder.mkdir(exist_ok=True)
        n = len(list(folder.glob(f"{item_id}-*.json")))
        path = folder / f"{item_id}-{n:03d}.json"
        write_json(path, {"item_id": item_id, **entry})
        return {"item_id": item_id, "stored": "standalone", "path": str(path)}
