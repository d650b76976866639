"""The HTTP request handler of the scoring server: routes, JSON errors, body and time limits.

Rules: every answer is JSON (the stdlib's own error pages included); the body size is judged from
Content-Length before it is read; headers and body leave in one write with TCP_NODELAY, so a
keep-alive client never waits on Nagle's algorithm; a request has one deadline for its request
line, headers and body together (limits.Watchdog); decoding and scoring happen inside a bounded
admission turn (limits.Admission).

The handler depends on the server only through ``EdgeApp`` (the few things a route needs:
limits, metrics, the live inspector, health and reload), so imports go one way: server.py
imports this module, never the reverse.

``POST /score`` answers 200 with ``verdict`` "pass" or "reject", or 422 with ``verdict``
"invalid" when the frame breaks the bundle's frame contract (a non-2xx status, so a client
that only reads ``decision`` cannot mistake it for a pass). ``?map=png`` or ``?map=array``
adds the anomaly map on the fixed scale where 1.0 is the threshold (deploy/README.md).
"""

from __future__ import annotations

import json
import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qs

from . import api, line_loop
from .auth import RateGate, bearer_problem
from .contract import InvalidFrame
from .infer import Inspector
from .limits import Admission, Busy, Watchdog
from .metrics import Metrics
from .preprocess import InputError, TooLargeError


class LiveInspector(Protocol):
    """server.ServingState: the inspector serving now (swapped whole on reload)."""

    def current(self) -> Inspector: ...


class EdgeApp(Protocol):
    """What the handler needs from the server; server.EdgeServer provides it."""

    state: LiveInspector
    metrics: Metrics
    admission: Admission
    watchdog: Watchdog
    max_bytes: int
    request_timeout: float
    verbose: bool
    token: str | None  # the Bearer token of mutating routes (auth.py); None on loopback
    reload_gate: RateGate
    capture: Any  # capture.Capture, or None when serve runs without --capture (line loop)
    feedback_token: str | None  # POST /feedback is refused while this is None

    def health(self) -> dict[str, Any]: ...

    def reload(self) -> tuple[bool, str]: ...


DRAIN_LIMIT = 16 * 1024 * 1024
DRAIN_SECONDS = 1.0
ROUTES = {"/score": ("POST",), "/reload": ("POST",), "/healthz": ("GET", "HEAD"),
          "/metrics": ("GET", "HEAD"), "/feedback": ("POST",)}  # fmt: skip
_STDLIB_ERRORS = {
    400: ("bad_request", "malformed HTTP request"),
    408: ("timeout", "request not received in time"),
    414: ("too_large", "request line too long"),
    431: ("too_large", "request headers too large (line too long or too many headers)"),
    501: ("not_implemented", "HTTP method not supported"),
    505: ("bad_request", "HTTP version not supported"),
}


class EdgeHandler(BaseHTTPRequestHandler):
    server: EdgeApp  # type: ignore[assignment]  (the socketserver base is typed loosely)
    protocol_version = "HTTP/1.1"
    server_version = "granvae-edge"
    wbufsize = 64 * 1024  # headers + body are flushed together, in one send

    # --- plumbing -------------------------------------------------------------------------
    def setup(self) -> None:
        self.timeout = self.server.request_timeout
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (tests on a socketpair); nothing to tune
        self._deadline = time.monotonic() + self.server.request_timeout

    def handle_one_request(self) -> None:
        """Arm the whole-request deadline; it covers waiting for, and reading, the request."""
        self._deadline = time.monotonic() + self.server.request_timeout
        self.server.watchdog.arm(self.connection, self.server.request_timeout)
        try:
            super().handle_one_request()
        finally:
            self.server.watchdog.disarm(self.connection)

    def parse_request(self) -> bool:
        """Headers that only ended because the deadline cut the connection are a 408."""
        if not super().parse_request():
            return False
        if self._late():
            self.send_error(408)
            return False
        return True

    def _received(self) -> None:
        """The request is fully read: the deadline no longer applies (scoring may queue)."""
        self.server.watchdog.disarm(self.connection)

    def _late(self) -> bool:
        return time.monotonic() >= self._deadline

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        if self.server.verbose:
            super().log_message(format, *args)

    def _send_json(
        self, code: int, payload: dict[str, Any], close: bool = False, extra: dict | None = None
    ) -> None:
        body = json.dumps(payload, allow_nan=False).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _error(
        self, code: int, outcome: str, message: str, close: bool = False,
        extra: dict | None = None, extra_body: dict | None = None,
    ) -> None:  # fmt: skip
        self.server.metrics.record(outcome)
        payload = {"error": message, "status": code, **(extra_body or {})}
        self._send_json(code, payload, close=close, extra=extra)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's errors (bad request line, 431, 501, ...) as JSON, never an HTML page."""
        if code == 400 and self._late():
            code = 408
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # an unparsable request still gets a status line
        outcome, text = _STDLIB_ERRORS.get(code, ("bad_request", HTTPStatus(code).phrase))
        if code == 408:
            text = f"request not received within {self.server.request_timeout:g} s"
        elif code == 501:
            text = f"HTTP method {getattr(self, 'command', '')!r} not supported"
        elif code == 400 and message:
            text = f"malformed HTTP request: {message}"
        self.log_error("code %d, message %s", code, text)
        self._error(code, outcome, text, close=True)

    def handle_expect_100(self) -> bool:
        """Refuse an oversized upload before the client even sends it."""
        length = self._content_length()
        if length is not None and length > self.server.max_bytes:
            self._too_large(length)
            return False
        ok = super().handle_expect_100()
        self.wfile.flush()  # the 100 must leave now, not with the final answer
        return ok

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
        try:
            body = self.rfile.read(length)
        except OSError:
            body = b""
        if len(body) < length:
            if self._late():
                t = self.server.request_timeout
                self._error(408, "timeout", f"request body not received within {t:g} s", True)
            else:  # the client went away mid-upload
                self._error(400, "bad_input", "body shorter than Content-Length", close=True)
            return None
        return body

    # --- routes ---------------------------------------------------------------------------
    def _route(self) -> str:
        return self.path.split("?", 1)[0]

    def _not_allowed(self) -> None:
        path = self._route()
        if path not in ROUTES:
            self._error(404, "not_found", f"no route {self.command} {path}", close=True)
            return
        allowed = ", ".join(ROUTES[path])
        self._error(
            405, "method_not_allowed", f"{self.command} {path} is not allowed; use {allowed}",
            close=True, extra={"Allow": allowed},
        )  # fmt: skip

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed  # noqa: N815

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._received()
        path = self._route()
        if path == "/healthz":
            self._send_json(200, self.server.health())
        elif path == "/metrics":
            snapshot = self.server.metrics.snapshot()
            if self.server.capture is not None:
                snapshot["capture"] = self.server.capture.snapshot()
            self._send_json(200, snapshot)
        elif path in ROUTES:
            self._not_allowed()
        else:
            self._error(404, "not_found", f"no route GET {path}")

    do_HEAD = do_GET  # noqa: N815 (same headers, no body: _send_json skips it for HEAD)

    def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
        path = self._route()
        if path == "/score":
            self._score()
        elif path == "/reload":
            self._received()
            if self._content_length():
                self.close_connection = True  # unread body: the connection cannot be reused
            if self._refused_mutation():
                return
            self._reload()
        elif path == "/feedback":
            self._feedback()
        else:
            self._received()
            self._not_allowed()

    def _score(self) -> None:
        t0 = time.perf_counter()
        body = self._read_body()  # first: an unread body would corrupt a keep-alive stream
        if body is None:
            return
        self._received()
        query = parse_qs(self.path.split("?", 1)[1] if "?" in self.path else "")
        map_format = (query.get("map") or [None])[0]
        if map_format not in (None, *api.MAP_FORMATS):
            self._error(400, "bad_input", f"map={map_format!r}: use one of {api.MAP_FORMATS}")
            return
        try:
            body = api.image_bytes(body, self.headers.get("Content-Type", ""))
        except InputError as exc:
            self._error(400, "bad_input", str(exc))
            return
        inspector = self.server.state.current()  # this request keeps this session throughout
        try:
            with self.server.admission.turn():
                verdict = inspector.score_one(body)
                payload = verdict.to_json(show_group=inspector.show_group)
                if map_format is not None:
                    payload["anomaly_map"] = api.encode_map(
                        inspector.normalised_map(verdict), map_format
                    )
        except Busy as exc:
            self._error(503, "busy", str(exc), extra={"Retry-After": "1"})
            return
        except TooLargeError as exc:
            self._error(413, "too_large", str(exc))
            return
        except InvalidFrame as exc:
            self.server.metrics.record_decision("invalid")
            bundle = inspector.bundle
            self._error(422, "invalid", str(exc), extra_body={
                "verdict": "invalid", "check": exc.check, "threshold": inspector.threshold,
                "revision": bundle.revision, "model_sha256": bundle.model_sha256})  # fmt: skip
            return
        except InputError as exc:
            self._error(400, "bad_input", str(exc))
            return
        except Exception as exc:  # a model failure is the server's fault, not the client's
            self._error(500, "error", f"scoring failed: {type(exc).__name__}: {exc}")
            return
        bundle = inspector.bundle
        payload.update(revision=bundle.revision, model_sha256=bundle.model_sha256)
        if self.server.capture is not None:  # line loop: the id an operator's verdict refers to
            payload["item_id"] = line_loop.capture_verdict(self.server.capture, body, verdict,
                                                           bundle)  # fmt: skip
        self.server.metrics.record("ok", (time.perf_counter() - t0) * 1000.0)
        self.server.metrics.record_decision(verdict.verdict)
        self._send_json(200, payload)

    # --- auth (auth.py): every mutating route calls this first ---------------------------
    def _refused_mutation(self) -> bool:
        """401 without the device token; True when the request was refused and answered."""
        problem = bearer_problem(self.headers.get("Authorization"), self.server.token)
        if problem is None:
            return False
        self._error(401, "unauthorized", problem, extra={"WWW-Authenticate": "Bearer"})
        return True
    def _feedback(self) -> None:
        """POST /feedback (line loop): an operator's verdict on an item, token-protected."""
        body = self._read_body()
        if body is None:
            return
        self._received()
        code, payload = line_loop.feedback(self.server, self.headers.get("Authorization"), body)
        self._send_json(code, payload)

    def _reload(self) -> None:
        wait = self.server.reload_gate.try_pass()
        if wait > 0:  # a flood costs a header parse, never a model load
            every = self.server.reload_gate.interval_s
            self._error(429, "rate_limited", f"reload refused: at most one per {every:g} s",
                        extra={"Retry-After": str(int(wait) + 1)})  # fmt: skip
            return
        ok, reason = self.server.reload()
        if ok:
            self._send_json(200, {"ok": True, **self.server.health()})
            return
        current = self.server.state.current().bundle
        payload = {"ok": False, "error": reason, "status": 409,
                   "serving_revision": current.revision,
                   "serving_model_sha256": current.model_sha256}  # fmt: skip
        self._send_json(409, payload)
