"""Bounds that keep one misbehaving client from taking the whole line's scoring server down.

Three independent limits, each answering "too much" with a JSON error instead of memory growth
or a stalled thread:

- ``Slots``: how many connections hold a worker thread at once (beyond: 503, connection closed).
- ``Admission``: how many requests decode and score at once, and how many may wait for a turn
  (beyond: 503). Decoding happens inside a turn, so peak decode memory is bounded by
  ``inflight x max_pixels``, not by the number of clients.
- ``Watchdog``: a whole-request deadline (request line, headers and body together). A socket
  timeout is per read, so a client sending one byte every 29 s would hold a thread forever; the
  watchdog shuts the read side of a connection that is past its deadline.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def steady_allocator(mmap_threshold: int = 1 << 20, arenas: int = 2) -> bool:
    """Make freed decode buffers go back to the OS (glibc only; a no-op elsewhere).

    Why: the decode bound above counts buffers that are alive. glibc raises its mmap
    threshold each time a large block is freed, so later frame-sized buffers land in
    per-thread heaps that keep their pages after the frame is answered, and every new
    handler thread may get a fresh arena. Peak RSS then grows with the number of clients
    that ever came, not with ``inflight``. A fixed threshold (large buffers always mapped
    and unmapped) and few arenas keep the stated bound honest. Returns whether it applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    return bool(mallopt(_M_ARENA_MAX, int(arenas)) == 1 and ok)


class Busy(Exception):
    """No scoring turn within the queue bound or the wait limit (HTTP 503)."""


class Admission:
    """A counting semaphore with a bounded number of waiters and a bounded wait."""

    def __init__(self, inflight: int, queue: int, wait_s: float) -> None:
        if inflight < 1 or queue < 0 or wait_s <= 0:
            raise ValueError("inflight >= 1, queue >= 0 and wait_s > 0 are required")
        self.inflight, self.queue, self.wait_s = inflight, queue, wait_s
        self._sem = threading.BoundedSemaphore(inflight)
        self._lock = threading.Lock()
        self._waiting = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold one scoring turn; raises Busy when the queue is full or the wait runs out."""
        if not self._sem.acquire(blocking=False):
            with self._lock:
                if self._waiting >= self.queue:
                    raise Busy(f"server busy: {self.inflight} scoring, {self._waiting} waiting")
                self._waiting += 1
            try:
                got = self._sem.acquire(timeout=self.wait_s)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not got:
                raise Busy(f"server busy: no scoring turn within {self.wait_s:g} s")
        try:
            yield
        finally:
            self._sem.release()


class Watchdog:
    """Shuts the read side of connections whose request deadline has passed.

    One daemon thread scans the armed connections every ``tick_s``; arming and disarming are
    dictionary writes under a lock, cheap enough for every request.
    """

    def __init__(self, tick_s: float = 0.25) -> None:
        self.tick_s = tick_s
        self._lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}
        self.expired = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-watchdog", daemon=True)
        self._thread.start()

    def arm(self, conn: socket.socket, seconds: float) -> None:
        with self._lock:
            self._deadlines[conn] = time.monotonic() + seconds

    def disarm(self, conn: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(conn, None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            with self._lock:
                late = [c for c, t in self._deadlines.items() if t <= now]
                for conn in late:
                    del self._deadlines[conn]
                self.expired += len(late)
            for conn in late:
                try:
                    # SHUT_RD wakes the blocked recv with EOF; the handler then answers 408.
                    conn.shutdown(socket.SHUT_RD)
                except OSError:
                    pass


class Slots:
    """A non-blocking counter of connections holding a worker thread."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("at least one connection slot is required")
        self.limit = limit
        self._sem = threading.BoundedSemaphore(limit)

    def try_take(self) -> bool:
        return self._sem.acquire(blocking=False)

    def give_back(self) -> None:
        self._sem.release()
