"""Hostile inputs shared by the reliability tests: images and raw HTTP requests that break things.

Each builder returns bytes; the tests pair them with the answer the runtime must give.
"""

from __future__ import annotations

import functools
import io
import socket

import numpy as np
from edge_fixtures import noisy_gray, png_bytes
from PIL import Image

GOOD = png_bytes(noisy_gray(np.random.default_rng(0), 20))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@functools.cache
def pixel_bomb() -> bytes:
    """~62 KB of PNG that decodes to 8000x8000 = 64 M pixels."""
    return encode(Image.new("L", (8000, 8000)), "PNG")


def multipage_tiff() -> bytes:
    pages = [Image.fromarray(noisy_gray(np.random.default_rng(k), 20)) for k in range(3)]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def tiff_32bit() -> bytes:
    return encode(Image.fromarray(np.full((32, 32), 100_000, np.int32)), "TIFF")


def float_tiff() -> bytes:
    return encode(Image.fromarray(np.full((32, 32), 0.5, np.float32)), "TIFF")


def animated_gif() -> bytes:
    frames = [Image.fromarray(noisy_gray(np.random.default_rng(k), 20)) for k in range(2)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])


def transparent_png() -> bytes:
    return encode(Image.new("LA", (32, 32), (100, 0)), "PNG")


def post(body: bytes, path: str = "/score", extra: str = "") -> bytes:
    """A raw HTTP/1.1 POST with Content-Length (``extra``: more header lines, CRLF-ended)."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from a raw socket: (status, headers (lower-case), body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a full response head: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    length = int(headers.get("content-length", 0))
    if status != 100:
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, headers, body


def raw_request(port: int, payload: bytes, timeout: float = 10) -> tuple[int, dict, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        return read_response(sock)
