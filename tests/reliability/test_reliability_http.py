"""The scoring server against hostile requests: a table of input -> status and message.

Every answer must be JSON (never an HTML page), name the problem with the input (never a Python
object repr), and leave the server serving. A real EdgeServer on a free loopback port.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest
from edge_fixtures import make_bundle, running_server
from granvae_edge.server import ServerLimits, make_server
from inputs import (
    GOOD,
    animated_gif,
    float_tiff,
    multipage_tiff,
    pixel_bomb,
    post,
    raw_request,
    read_response,
    tiff_32bit,
    transparent_png,
)

MAX_BYTES = 64 * 1024


# name -> (raw request, expected status, substring of the JSON "error")
CASES = {
    "corrupt png": (lambda: post(b"\x89PNG\r\n\x1a\nnot really"), 400, "not a decodable image"),
    "unknown format": (lambda: post(b"hello world" * 10), 400, "unknown or unsupported"),
    "truncated png": (lambda: post(GOOD[: len(GOOD) // 2]), 400, "truncated"),
    "transparent": (lambda: post(transparent_png()), 400, "transparent"),
    "empty body": (lambda: post(b""), 400, "empty body"),
    "bad content-length": (
        lambda: b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        400, "invalid Content-Length",
    ),
    "chunked": (
        lambda: b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        411, "chunked",
    ),
    "body over max-bytes": (lambda: post(b"\0" * (2 * MAX_BYTES)), 413, "exceeds"),
    "pixel bomb (62 KB -> 64 MP)": (lambda: post(pixel_bomb()), 413, "image too large"),
    "multi-page tiff": (lambda: post(multipage_tiff()), 400, "3 pages/frames"),
    "animated gif": (lambda: post(animated_gif()), 400, "2 pages/frames"),
    "32-bit tiff": (lambda: post(tiff_32bit()), 400, "outside 0..65535"),
    "float tiff": (lambda: post(float_tiff()), 400, "mode F"),
    "unknown route": (lambda: post(GOOD, "/nope"), 404, "no route POST /nope"),
    "GET /score": (lambda: b"GET /score HTTP/1.1\r\nHost: x\r\n\r\n", 405, "use POST"),
    "PUT /score": (lambda: post(GOOD).replace(b"POST", b"PUT", 1), 405, "use POST"),
    "DELETE /healthz": (
        lambda: b"DELETE /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 405, "use GET, HEAD"
    ),
    "unknown method": (lambda: b"BREW /score HTTP/1.1\r\nHost: x\r\n\r\n", 501, "'BREW'"),
    "oversized header": (
        lambda: b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
        431, "headers too large",
    ),
    "too many headers": (
        lambda: b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 120 + b"\r\n",
        431, "headers too large",
    ),
    "request line too long": (
        lambda: b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414, "request line too long"
    ),
    "garbage request line": (lambda: b"\x16\x03\x01\x02\x00\x01\r\n\r\n", 400, "malformed"),
}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    bundle = make_bundle(tmp_path_factory.mktemp("http") / "bundle", threshold=1.0)
    with running_server(bundle, max_bytes=MAX_BYTES) as (url, srv):
        yield url, srv


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request_gets_json_error_and_server_keeps_serving(server, name):
    _url, srv = server
    port = srv.server_address[1]
    build, status, needle = CASES[name]
    code, headers, body = raw_request(port, build())
    assert code == status, (name, body[:300])
    assert headers["content-type"] == "application/json", (name, body[:300])
    payload = json.loads(body)
    assert payload["status"] == status and needle in payload["error"], payload
    assert "object at 0x" not in payload["error"] and "Traceback" not in payload["error"]
    code, _, body = raw_request(port, post(GOOD))
    assert code == 200 and json.loads(body)["revision"] == 1, f"not serving after {name}"


def test_head_healthz_has_headers_and_no_body(server):
    url, _ = server
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    conn.request("HEAD", "/healthz")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/json"
    assert int(resp.getheader("Content-Length")) > 10 and resp.read() == b""
    conn.request("GET", "/healthz")  # the same keep-alive connection still works after a HEAD
    assert json.loads(conn.getresponse().read())["ok"] is True
    conn.close()


def test_response_head_and_body_leave_in_one_write(server):
    """With headers and body in separate writes, Nagle holds the body ~40 ms on keep-alive."""
    _, srv = server
    with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10) as sock:
        for _ in range(5):  # keep-alive: the 2nd+ answers are the ones Nagle delayed
            sock.sendall(post(GOOD))
            first = sock.recv(65536)
            head, _, body = first.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert json.loads(body)["revision"] == 1  # the whole body came with the head
        nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert nodelay == 0  # our client side is untouched: the server's writes made the difference


def test_slow_sender_is_cut_at_the_whole_request_deadline(tmp_path):
    """One byte every 0.3 s never trips a per-read timeout; the request deadline cuts it."""
    bundle = make_bundle(tmp_path / "b")
    limits = ServerLimits(max_bytes=MAX_BYTES, request_timeout_s=1.0)
    srv = make_server(bundle, "127.0.0.1", 0, intra_op_threads=1, limits=limits)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        port = srv.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            t0 = time.monotonic()
            for _ in range(40):  # bounded: 12 s at most
                try:
                    sock.sendall(b"x")
                except OSError:
                    break
                sock.settimeout(0.3)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break
                except TimeoutError:
                    continue
            sock.settimeout(10)
            code, _, body = read_response(sock)
            elapsed = time.monotonic() - t0
        assert code == 408 and "within 1 s" in json.loads(body)["error"]
        assert elapsed < 4.0, f"slow sender held the connection {elapsed:.1f} s past a 1 s limit"
        # Slowloris on the headers too: the deadline covers request line + headers.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            t0 = time.monotonic()
            for _ in range(40):
                try:
                    sock.sendall(b"X: y\r\n")
                    time.sleep(0.2)
                except OSError:
                    break
                if time.monotonic() - t0 > 3:
                    break
            sock.settimeout(5)
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
        assert time.monotonic() - t0 < 4.0
        assert data == b"" or b" 408 " in data.split(b"\r\n")[0]
        assert raw_request(port, post(GOOD))[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)
