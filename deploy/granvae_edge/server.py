"""A small HTTP scoring server for a line device (stdlib ThreadingHTTPServer, bounded).

Why stdlib: the device image stays numpy + onnxruntime + pillow. Robustness comes from a few
rules: every request is answered with JSON whatever it sent (handler.py); connections, scoring
turns, decoded pixels and request time are all bounded (limits.py), so a flood of huge images
or slow senders costs a 413/503/408, not the memory or the threads of the line; and a reload
builds and verifies a whole new Inspector before swapping one reference under a lock, so a
request in flight finishes on the session it started with and a bad new bundle never replaces a
good one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .auth import RateGate, require_token_for
from .capture import Capture
from .handler import EdgeHandler
from .infer import Inspector
from .limits import Admission, Slots, Watchdog, steady_allocator
from .metrics import Metrics
from .preprocess import DECODE_BYTES_PER_PIXEL
from .signature import TrustStore

DEFAULT_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ServerLimits:
    """Every bound of the server in one place (CLI flags map one to one)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int | None = None  # None: preprocess.default_max_pixels(model input)
    connections: int = 64  # worker threads, one per open connection
    inflight: int = max(1, min(4, os.cpu_count() or 1))  # requests decoding/scoring at once
    queue: int = 32  # requests waiting for a scoring turn
    queue_wait_s: float = 10.0
    request_timeout_s: float = 30.0  # request line + headers + body, as a whole
    reload_interval_s: float = 0.0  # min seconds between POST /reload (CLI default: 3)


class ServingState:
    """The live Inspector behind a lock; reloads are serialised and verified before the swap."""

    def __init__(
        self,
        bundle_dir: str | Path,
        intra_op_threads: int | None = None,
        max_pixels: int | None = None,
        trust: TrustStore | None = None,
    ) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.intra_op_threads = intra_op_threads
        self.max_pixels = max_pixels
        self.trust = trust  # None: $GRANVAE_EDGE_TRUSTED_KEYS at each load (bundle.load_bundle)
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._inspector = self._load()
        self.loaded_at = time.time()

    def current(self) -> Inspector:
        with self._lock:
            return self._inspector

    def _load(self) -> Inspector:
        return Inspector(
            self.bundle_dir, intra_op_threads=self.intra_op_threads, max_pixels=self.max_pixels,
            trust=self.trust,
        )  # fmt: skip

    def reload(self) -> tuple[bool, str]:
        """Load + verify + smoke-test the folder again; swap only if all of it passed."""
        with self._reload_lock:
            try:
                fresh = self._load()
            except Exception as exc:  # any failure means "keep the old one"
                return False, f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._inspector = fresh
                self.loaded_at = time.time()
            return True, "reloaded"


class EdgeServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a bounded number of connection threads, metrics and limits."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        state: ServingState,
        limits: ServerLimits | None = None,
        verbose: bool = False,
        token: str | None = None,
        capture: Capture | None = None,
        feedback_token: str | None = None,
    ) -> None:
        self.state = state
        # --- auth (auth.py): the Bearer token of mutating routes and the reload rate gate ---
        require_token_for(address[0], token)
        self.token = token
        self.reload_gate = RateGate(limits.reload_interval_s if limits else 0.0)
        self.capture = capture  # line loop (capture.py): None when serve runs without --capture
        self.feedback_token = feedback_token  # POST /feedback is refused while this is None
        self.limits = limits = limits or ServerLimits()
        self.metrics = Metrics()
        self.max_bytes = limits.max_bytes
        self.request_timeout = limits.request_timeout_s
        self.slots = Slots(limits.connections)
        self.admission = Admission(limits.inflight, limits.queue, limits.queue_wait_s)
        self.watchdog = Watchdog()
        self.verbose = verbose
        super().__init__(address, EdgeHandler)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        """One thread per connection, up to ``limits.connections``; beyond that, 503 and close."""
        if not self.slots.try_take():
            self.metrics.record("busy")
            _refuse_busy(request, self.limits.connections)
            self.shutdown_request(request)
            return
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address), daemon=True
        )
        thread.start()

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.slots.give_back()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, not a traceback: a client that vanishes mid-answer is routine on a line."""
        exc = sys.exc_info()[1]
        self.metrics.record("connection_error")
        if self.verbose:
            print(f"connection {client_address}: {type(exc).__name__}: {exc}", file=sys.stderr)

    def server_close(self) -> None:
        self.watchdog.stop()
        super().server_close()
        if self.capture is not None:
            self.capture.close()  # write what is queued, flush the last stream segment

    def reload(self) -> tuple[bool, str]:
        ok, reason = self.state.reload()
        self.metrics.record_reload(ok)
        return ok, reason

    def health(self) -> dict[str, Any]:
        inspector = self.state.current()
        bundle = inspector.bundle
        return {
            "ok": True,
            "revision": bundle.revision,
            "model_sha256": bundle.model_sha256,
            "threshold": bundle.threshold,
            "bundle": str(bundle.directory),
            "mlflow_model_uri": bundle.manifest.get("mlflow_model_uri"),
            "loaded_at": self.state.loaded_at,
            "frame_contract": inspector.contract_status(),
            "memory_bound_bytes": self.memory_bound(),
        }

    def memory_bound(self) -> int:
        """The stated decode bound: inflight x max_pixels x bytes per decoded pixel."""
        return self.limits.inflight * self.state.current().max_pixels * DECODE_BYTES_PER_PIXEL


def _refuse_busy(request: socket.socket, limit: int) -> None:
    """Best-effort JSON 503 on a connection we will not serve (short send timeout)."""
    body = json.dumps({"error": f"server busy: {limit} connections open", "status": 503})
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    try:
        request.settimeout(1.0)
        request.sendall((head + body).encode("utf-8"))
    except OSError:
        pass


def make_server(
    bundle_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_bytes: int = DEFAULT_MAX_BYTES,
    intra_op_threads: int | None = None,
    verbose: bool = False,
    limits: ServerLimits | None = None,
    trust: TrustStore | None = None,
    token: str | None = None,
    capture: Capture | None = None,
    feedback_token: str | None = None,
) -> EdgeServer:
    """Verify the bundle and bind; raises BundleError if the bundle is not servable.

    ``limits`` wins over ``max_bytes`` when both are given (max_bytes is kept for callers that
    only tune the body size).
    """
    limits = limits or ServerLimits(max_bytes=max_bytes)
    require_token_for(host, token)  # before the bundle is loaded: refuse fast
    steady_allocator()  # freed frame buffers return to the OS: the decode bound holds
    state = ServingState(bundle_dir, intra_op_threads, max_pixels=limits.max_pixels, trust=trust)
    # POST /feedback takes its own operator token when given, else the device token
    return EdgeServer(
        (host, port), state, limits=limits, verbose=verbose, token=token, capture=capture,
        feedback_token=feedback_token or token,
    )  # fmt: skip


def _install_signals(server: EdgeServer) -> None:
    """SIGHUP reloads (like POST /reload); SIGTERM/SIGINT stop serving cleanly."""

    def on_hup(_signo: int, _frame: Any) -> None:
        def work() -> None:
            ok, reason = server.reload()
            print(f"SIGHUP reload: {'ok' if ok else 'refused'}: {reason}", file=sys.stderr)

        threading.Thread(target=work, daemon=True).start()

    def on_stop(_signo: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)


def serve(server: EdgeServer) -> None:
    """Run until SIGTERM/SIGINT (main thread only: signals need it)."""
    _install_signals(server)
    host, port = server.server_address[:2]
    bundle = server.state.current().bundle
    print(
        f"serving {bundle.directory} revision {bundle.revision} on http://{host}:{port}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
