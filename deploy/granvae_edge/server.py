"""A small HTTP scoring server for a line device (stdlib ThreadingHTTPServer).

Why stdlib: the device image stays numpy + onnxruntime + pillow. Robustness comes from three
rules: every request is answered with JSON whatever it sent (bad input is a 4xx, never a crash);
the body size is judged from Content-Length before it is read; and a reload builds and verifies a
whole new Inspector before swapping one reference under a lock, so a request in flight finishes
on the session it started with and a bad new bundle never replaces a good one.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .infer import Inspector
from .metrics import Metrics
from .preprocess import InputError

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DRAIN_LIMIT = 16 * 1024 * 1024
DRAIN_SECONDS = 1.0


class ServingState:
    """The live Inspector behind a lock; reloads are serialised and verified before the swap."""

    def __init__(self, bundle_dir: str | Path, intra_op_threads: int | None = None) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.intra_op_threads = intra_op_threads
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._inspector = Inspector(self.bundle_dir, intra_op_threads=intra_op_threads)
        self.loaded_at = time.time()

    def current(self) -> Inspector:
        with self._lock:
            return self._inspector

    def reload(self) -> tuple[bool, str]:
        """Load + verify + smoke-test the folder again; swap only if all of it passed."""
        with self._reload_lock:
            try:
                fresh = Inspector(self.bundle_dir, intra_op_threads=self.intra_op_threads)
            except Exception as exc:  # any failure means "keep the old one"
                return False, f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._inspector = fresh
                self.loaded_at = time.time()
            return True, "reloaded"


class EdgeServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying the serving state, metrics and limits."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        state: ServingState,
        max_bytes: int = DEFAULT_MAX_BYTES,
        verbose: bool = False,
    ) -> None:
        self.state = state
        self.metrics = Metrics()
        self.max_bytes = max_bytes
        self.verbose = verbose
        super().__init__(address, EdgeHandler)

    def reload(self) -> tuple[bool, str]:
        ok, reason = self.state.reload()
        self.metrics.record_reload(ok)
        return ok, reason


class EdgeHandler(BaseHTTPRequestHandler):
    server: EdgeServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # a stalled client cannot hold a thread forever
    server_version = "granvae-edge"

    # --- plumbing -------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        if self.server.verbose:
            super().log_message(format, *args)

    def _send_json(self, code: int, payload: dict[str, Any], close: bool = False) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _error(self, code: int, outcome: str, message: str, close: bool = False) -> None:
        self.server.metrics.record(outcome)
        self._send_json(code, {"error": message, "status": code}, close=close)

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            return -1
        return value if value >= 0 else -1

    def _drain_and_close(self, expected: int) -> None:
        """Answer first, then discard a bounded amount so the client can read our reply.

        Closing with unread bytes makes the kernel send RST, which can destroy the 413 before
        the client reads it; a short, capped drain avoids that without buffering the upload.
        """
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(DRAIN_SECONDS)
            left, deadline = min(expected, DRAIN_LIMIT), time.monotonic() + DRAIN_SECONDS
            while left > 0 and time.monotonic() < deadline:
                chunk = self.connection.recv(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _too_large(self, length: int) -> None:
        self._error(
            413, "too_large", f"body of {length} bytes exceeds {self.server.max_bytes}", close=True
        )

    def handle_expect_100(self) -> bool:
        """Refuse an oversized upload before the client even sends it."""
        length = self._content_length()
        if length is not None and length > self.server.max_bytes:
            self._too_large(length)
            return False
        return super().handle_expect_100()

    def _read_body(self) -> bytes | None:
        """The request body, or None after an error reply has been sent."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._error(411, "length_required", "chunked uploads are not accepted", close=True)
            return None
        length = self._content_length()
        if length is None or length == 0:
            self._error(400, "bad_input", "empty body: send the image bytes")
            return None
        if length < 0:
            self._error(400, "bad_input", "invalid Content-Length", close=True)
            return None
        if length > self.server.max_bytes:
            self._too_large(length)
            self._drain_and_close(length)
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True  # the client went away mid-upload
            self._error(400, "bad_input", "body shorter than Content-Length", close=True)
            return None
        return body

    # --- routes ---------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send_json(200, self._health())
        elif path == "/metrics":
            self._send_json(200, self.server.metrics.snapshot())
        else:
            self._error(404, "not_found", f"no route GET {path}")

    def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
        path = self.path.split("?", 1)[0]
        if path == "/score":
            self._score()
        elif path == "/reload":
            if self._content_length():
                self.close_connection = True  # unread body: the connection cannot be reused
            self._reload()
        else:
            self._error(404, "not_found", f"no route POST {path}", close=True)

    def _health(self) -> dict[str, Any]:
        inspector = self.server.state.current()
        bundle = inspector.bundle
        return {
            "ok": True,
            "revision": bundle.revision,
            "model_sha256": bundle.model_sha256,
            "threshold": bundle.threshold,
            "bundle": str(bundle.directory),
            "mlflow_model_uri": bundle.manifest.get("mlflow_model_uri"),
            "loaded_at": self.server.state.loaded_at,
        }

    def _score(self) -> None:
        t0 = time.perf_counter()
        body = self._read_body()
        if body is None:
            return
        inspector = self.server.state.current()  # this request keeps this session throughout
        try:
            verdict = inspector.score_one(body)
        except InputError as exc:
            self._error(400, "bad_input", str(exc))
            return
        except Exception as exc:  # a model failure is the server's fault, not the client's
            self._error(500, "error", f"{type(exc).__name__}: {exc}")
            return
        payload = verdict.to_json()
        bundle = inspector.bundle
        payload.update(revision=bundle.revision, model_sha256=bundle.model_sha256)
        self.server.metrics.record("ok", (time.perf_counter() - t0) * 1000.0)
        self.server.metrics.record_decision(verdict.decision)
        self._send_json(200, payload)

    def _reload(self) -> None:
        ok, reason = self.server.reload()
        if ok:
            self._send_json(200, {"ok": True, **self._health()})
        else:
            current = self.server.state.current().bundle
            self._send_json(
                409,
                {
                    "ok": False,
                    "error": reason,
                    "serving_revision": current.revision,
                    "serving_model_sha256": current.model_sha256,
                },
            )


def make_server(
    bundle_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_bytes: int = DEFAULT_MAX_BYTES,
    intra_op_threads: int | None = None,
    verbose: bool = False,
) -> EdgeServer:
    """Verify the bundle and bind; raises BundleError if the bundle is not servable."""
    state = ServingState(bundle_dir, intra_op_threads=intra_op_threads)
    return EdgeServer((host, port), state, max_bytes=max_bytes, verbose=verbose)


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
