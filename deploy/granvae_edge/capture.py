"""Capture on the device: keep what the line inspected without ever slowing scoring down.

``Capture.submit`` is called on the scoring path; it only builds two small dicts, decides
whether to keep the image and puts the work on a bounded queue (never waiting: a full queue
drops the item's image and counts it). One writer thread owns the disk: it writes kept frames
with their records into the spool (spool.py: atomic, bounded) and flushes the compact record
of every inspection in segments (every ``segment_size`` records or ``segment_seconds``).

A full queue (a disk slower than the line) costs images, never the monitor's view: the compact
record of an inspection that found the queue full is set aside in memory (a few hundred bytes,
up to ``STREAM_BACKLOG`` records, then counted as ``stream_lost``) and written with the next
segment, marked ``captured: false``.

What is kept: every reject, every invalid frame, and a share ``pass_share`` of passes (a
seeded coin, so a test can predict it). Every inspection, kept or not, leaves a compact record
(id, time, score, verdict, threshold, latent means) for the monitor.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import os
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .spool import Spool, SpoolBounds

VERDICTS = ("pass", "reject", "invalid")
STREAM_BACKLOG = 100_000  # compact records held while the queue is full (~30 MB at most)


@dataclass(frozen=True)
class CaptureConfig:
    spool: str
    device: str = "device"
    line: str = "line"
    pass_share: float = 0.05
    bounds: SpoolBounds = SpoolBounds()
    queue_size: int = 256
    segment_size: int = 512
    segment_seconds: float = 10.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.pass_share <= 1.0:
            raise ValueError(f"pass share must be in [0, 1], got {self.pass_share}")
        if self.queue_size < 1 or self.segment_size < 1 or self.segment_seconds <= 0:
            raise ValueError("capture queue and segment sizes must be positive")


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def _finite(x: Any) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


class Capture:
    """The scoring path's handle on the spool: submit() never blocks; close() drains."""

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config
        self.spool = Spool(config.spool, config.bounds)
        self._queue: queue.Queue[tuple[str, Any] | None] = queue.Queue(config.queue_size)
        self._rng = random.Random(config.seed)
        self._ids = itertools.count()
        self._prefix = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.last_error: str | None = None  # the writer's last disk error, shown in /metrics
        self._pending: list[dict[str, Any]] = []
        self._unqueued: list[dict[str, Any]] = []  # compact records a full queue turned away
        self._segment_started = time.monotonic()
        self._segments = itertools.count()
        self._thread = threading.Thread(target=self._writer, name="capture-writer", daemon=True)
        self._thread.start()

    def new_id(self) -> str:
        """Sortable by time within a process, unique across restarts (start time + pid)."""
        return f"{self._prefix}-{next(self._ids):09d}"

    # --- scoring path -------------------------------------------------------------------------
    def submit(
        self, image: bytes, verdict: str, score: float | None, threshold: float | None,
        latent_mean: Any = None, model: dict[str, Any] | None = None,
        checks: dict[str, Any] | None = None,
    ) -> str:  # fmt: skip
        """Record one inspection; returns its item id (what an operator's verdict refers to)."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        item_id = self.new_id()
        with self._lock:
            keep = verdict != "pass" or self._rng.random() < self.config.pass_share
        latent = None if latent_mean is None else [round(float(v), 6) for v in latent_mean]
        compact = {"id": item_id, "t": _utc_now(), "score": _finite(score), "verdict": verdict,
                   "threshold": _finite(threshold), "latent_mean": latent, "captured": keep,
                   "model_sha256": (model or {}).get("model_sha256")}  # fmt: skip
        record = None
        if keep:
            record = {**compact, **(model or {}), "device": self.config.device,
                      "line": self.config.line, "image_bytes": len(image),
                      "image_sha256": hashlib.sha256(image).hexdigest(),
                      "checks": checks or {}, "feedback": []}  # fmt: skip
        self._put(("inspection", (compact, record, image if keep else None)), verdict, compact)
        return item_id

    def _put(self, job: tuple[str, Any], verdict: str, compact: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self.counts[f"queue_full_{verdict}"] += 1
                if len(self._unqueued) < STREAM_BACKLOG:
                    self._unqueued.append({**compact, "captured": False})
                else:
                    self.counts["stream_lost"] += 1
            return
        with self._lock:
            self.counts[f"inspected_{verdict}"] += 1

    # --- writer thread ------------------------------------------------------------------------
    def _writer(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=0.5)
            except queue.Empty:
                job = ("tick", None)
            if job is None:
                self._flush()
                return
            try:
                self._handle(job)
            except OSError as exc:  # disk full, read-only: count it, keep scoring
                with self._lock:
                    self.counts["write_errors"] += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"

    def _take_unqueued(self) -> None:
        with self._lock:
            unqueued, self._unqueued = self._unqueued, []
        self._pending.extend(unqueued)

    def _handle(self, job: tuple[str, Any]) -> None:
        kind, payload = job
        self._take_unqueued()
        if kind == "inspection":
            compact, record, image = payload
            if record is not None:
                kept = self.spool.add_item(compact["id"], image, record)
                compact["captured"] = kept
                with self._lock:
                    self.counts["captured" if kept else "not_captured"] += 1
            self._pending.append(compact)
        due = time.monotonic() - self._segment_started >= self.config.segment_seconds
        if len(self._pending) >= self.config.segment_size or (due and self._pending):
            self._flush()

    def _flush(self) -> None:
        self._take_unqueued()
        if self._pending:
            self.spool.write_segment(f"{self._prefix}-{next(self._segments):06d}", self._pending)
            self._pending = []
        self._segment_started = time.monotonic()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, flush the last segment and stop the writer."""
        self._queue.put(None)
        self._thread.join(timeout)

    def snapshot(self) -> dict[str, Any]:
        """The figures /metrics shows: counts, drops by verdict, spool usage."""
        with self._lock:
            counts = dict(self.counts)
        return {
            "counts": counts, "dropped": dict(self.spool.dropped),
            "evicted": dict(self.spool.evicted), "spool": self.spool.usage(),
            "queue": self._queue.qsize(), "recovered_at_start": self.spool.recovered,
            "last_error": self.last_error,
        }  # fmt: skip
