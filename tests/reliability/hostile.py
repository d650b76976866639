"""A hostile registry: a real HTTP server on 127.0.0.1 that answers like a broken MLflow.

The good path of `pull` is tested against a real `mlflow server` (tests/test_edge_pull.py); a
real server cannot be made to answer an HTML page, a list, a name with a NUL or a body that
stops halfway, so this one does, on purpose. It speaks the same REST paths; each route's answer
is set per test.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

API = "/api/2.0/mlflow"
ART = "/api/2.0/mlflow-artifacts/artifacts"

# An answer: (status, headers, body) or a callable writing to the handler itself.
Answer = tuple[int, dict[str, str], bytes] | Callable[[BaseHTTPRequestHandler], None]


def json_answer(obj: Any, status: int = 200) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def raw_answer(body: bytes, ctype: str = "application/json", status: int = 200) -> Answer:
    return status, {"Content-Type": ctype}, body


def registry_routes(bundle: Path, name: str = "m", version: str = "1") -> dict[str, Answer]:
    """Answers of a healthy registry serving ``bundle`` as version 1 of model ``name``."""
    mv = {"model_version": {"name": name, "version": version}}
    files = sorted(p.name for p in bundle.iterdir() if p.is_file())
    routes: dict[str, Answer] = {
        f"{API}/registered-models/alias": json_answer(mv),
        f"{API}/model-versions/get": json_answer(mv),
        f"{API}/model-versions/get-download-uri": json_answer(
            {"artifact_uri": "mlflow-artifacts:/1/abc/artifacts/bundle"}
        ),
        ART: json_answer(
            {"files": [{"path": f"1/abc/artifacts/bundle/{f}", "is_dir": False} for f in files]}
        ),
    }
    for f in files:
        data = (bundle / f).read_bytes()
        routes[f"{ART}/1/abc/artifacts/bundle/{f}"] = raw_answer(data, "application/octet-stream")
    return routes


def stalling_file(data: bytes, send: int, stall_s: float) -> Answer:
    """Announce all of ``data`` but send ``send`` bytes, stall, then drop the connection."""

    def write(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[:send])
        handler.wfile.flush()
        deadline = time.monotonic() + stall_s
        while time.monotonic() < deadline and not handler.server.stopping.is_set():
            time.sleep(0.05)
        handler.close_connection = True

    return write


class _Handler(BaseHTTPRequestHandler):
    server: _Hostile
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        self.server.hits.append(path)
        answer = self.server.routes.get(path)
        if answer is None:
            answer = json_answer({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": path}, 404)
        if callable(answer):
            answer(self)
            return
        status, headers, body = answer
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Hostile(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes: dict[str, Answer]) -> None:
        self.routes = routes
        self.hits: list[str] = []
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def hostile_registry(routes: dict[str, Answer]) -> Iterator[_Hostile]:
    server = _Hostile(routes)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
