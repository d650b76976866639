"""In-process request metrics for the HTTP server.

A device has no metrics stack; a bounded window of latencies and a few counters answered as JSON
on /metrics is enough for a line supervisor to scrape, and costs constant memory however long
the process runs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

import numpy as np

LATENCY_WINDOW = 2048


class Metrics:
    """Thread-safe counters by outcome and a sliding latency window."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._lock = threading.Lock()
        self._outcomes: Counter[str] = Counter()
        self._decisions: Counter[str] = Counter()
        self._reloads: Counter[str] = Counter()
        self._latency_ms: deque[float] = deque(maxlen=window)
        self.started = time.time()

    def record(self, outcome: str, latency_ms: float | None = None) -> None:
        with self._lock:
            self._outcomes[outcome] += 1
            if latency_ms is not None:
                self._latency_ms.append(latency_ms)

    def record_decision(self, verdict: str) -> None:
        """Count one verdict: "pass", "reject" or "invalid" (a frame the contract refused)."""
        with self._lock:
            self._decisions[verdict] += 1

    def record_reload(self, ok: bool) -> None:
        with self._lock:
            self._reloads["ok" if ok else "refused"] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            window = np.asarray(self._latency_ms, dtype=np.float64)
            outcomes = dict(self._outcomes)
            decisions = dict(self._decisions)
            reloads = dict(self._reloads)
        latency: dict[str, Any] = {"window": int(window.size), "p50": None, "p95": None}
        if window.size:
            latency["p50"] = round(float(np.percentile(window, 50)), 3)
            latency["p95"] = round(float(np.percentile(window, 95)), 3)
        return {
            "requests": outcomes,
            "requests_total": sum(outcomes.values()),
            "decisions": decisions,
            "verdicts": {k: decisions.get(k, 0) for k in ("pass", "reject", "invalid")},
            "reloads": reloads,
            "latency_ms": latency,
            "uptime_s": round(time.time() - self.started, 3),
        }
