"""Bounded load on loopback: 1, 4 and 16 clients, a hot reload mid-run, memory-heavy clients.

The server runs as its own process (`granvae-edge serve`) so its memory can be read from /proc.
Loops are bounded in count and in time. What must hold: no errors, no answer mixing one
revision with another's threshold, each client sees revisions only move forward, and peak RSS
stays bounded while pixel bombs and large images arrive from many clients at once.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from edge_fixtures import edge_env, free_port, make_bundle
from granvae_edge.calibrate import new_revision, order_statistic_threshold, write_revision
from granvae_edge.limits import Admission, Busy
from granvae_edge.manifest import read_manifest
from inputs import GOOD, encode, pixel_bomb, post, raw_request, read_response
from PIL import Image

pytestmark = pytest.mark.slow
PHASE_SECONDS = 20.0  # hard cap per phase, whatever the machine


def _recalibrate(bundle: Path, value: float) -> None:
    manifest = read_manifest(bundle)
    choice = order_statistic_threshold([value], 0.5)
    write_revision(bundle, new_revision(manifest, choice, 0.5, "load"))


def _rss_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


class Served:
    """`granvae-edge serve` in its own process on a free port."""

    def __init__(self, bundle: Path, *extra: str) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "granvae_edge", "serve", "--bundle", str(bundle),
               "--port", str(self.port), "--threads", "1", *extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=edge_env(), stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if raw_request(self.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not come up")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
        return self.proc.stderr.read()


def _client(port: int, n: int, stop_at: float, out: list, lock: threading.Lock) -> None:
    """One keep-alive client: n requests at most, never past stop_at."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    seen = []
    for _ in range(n):
        if time.monotonic() > stop_at:
            break
        conn.request("POST", "/score", GOOD)
        resp = conn.getresponse()
        body = json.loads(resp.read())
        seen.append((resp.status, body.get("revision"), body.get("threshold")))
    conn.close()
    with lock:
        out.append(seen)


def test_load_with_hot_reload_has_no_errors_and_no_mixed_revisions(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", threshold=1.0)
    thresholds = {1: 1.0}
    server = Served(bundle, "--reload-interval", "0")  # three reloads within seconds, on purpose
    try:
        rss0 = _rss_kb(server.proc.pid)["VmRSS"]
        for clients, per_client in ((1, 150), (4, 60), (16, 20)):
            results: list[list[tuple]] = []
            lock = threading.Lock()
            stop_at = time.monotonic() + PHASE_SECONDS
            workers = [threading.Thread(target=_client,
                                        args=(server.port, per_client, stop_at, results, lock))
                       for _ in range(clients)]  # fmt: skip
            for w in workers:
                w.start()
            time.sleep(0.05)
            rev = max(thresholds) + 1
            thresholds[rev] = 1.0 + rev / 10
            _recalibrate(bundle, thresholds[rev])
            code, _, body = raw_request(server.port, b"POST /reload HTTP/1.1\r\nHost: x\r\n\r\n")
            assert code == 200 and json.loads(body)["revision"] == rev
            for w in workers:
                w.join(timeout=PHASE_SECONDS + 10)
            answers = [a for seq in results for a in seq]
            assert len(results) == clients and len(answers) >= clients * 5, clients
            assert all(status == 200 for status, _, _ in answers), clients
            mixed = [a for a in answers if thresholds.get(a[1]) != a[2]]
            assert mixed == [], mixed[:3]
            for seq in results:  # within a client, revisions never go back
                revs = [r for _, r, _ in seq]
                assert revs == sorted(revs)
        rss1 = _rss_kb(server.proc.pid)["VmRSS"]
        assert rss1 - rss0 < 100_000, (rss0, rss1)  # KB: no growth with request count
    finally:
        assert "Traceback" not in server.stop()


def test_memory_stays_bounded_under_bombs_and_large_images(tmp_path):
    """12 clients sending 64 MP bombs and 16 MP images: refused or queued, never all at once."""
    bundle = make_bundle(tmp_path / "bundle", threshold=1.0)
    large = encode(Image.new("L", (4000, 4000), 128), "PNG")  # 16 MP, under the default cap
    bomb = pixel_bomb()
    server = Served(bundle, "--inflight", "2")
    try:
        base = _rss_kb(server.proc.pid)["VmHWM"]

        def send(k: int) -> int:
            body = bomb if k % 2 else large
            return raw_request(server.port, post(body), timeout=60)[0]

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(send, range(36)))
        assert codes.count(413) == 18 and codes.count(200) == 18, codes
        peak = _rss_kb(server.proc.pid)["VmHWM"]
        # 2 turns x (16 MB decoded + conversion copies) ~ 100 MB; 12 unbounded bombs were 860 MB
        assert peak - base < 250_000, (base, peak)
        assert raw_request(server.port, post(GOOD))[0] == 200
    finally:
        assert "Traceback" not in server.stop()


def test_connection_bound_answers_503_json(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    server = Served(bundle, "--connections", "2")
    held = []
    try:
        for _ in range(2):  # two keep-alive connections hold both worker threads
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 200
            held.append(sock)
        code, headers, body = raw_request(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert code == 503 and headers["content-type"] == "application/json"
        assert "2 connections open" in json.loads(body)["error"]
        held.pop().close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the freed slot is reusable
            code = raw_request(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")[0]
            if code == 200:
                break
            time.sleep(0.05)
        assert code == 200
    finally:
        for sock in held:
            sock.close()
        assert "Traceback" not in server.stop()


def test_admission_queue_and_wait_are_bounded():
    gate = Admission(inflight=1, queue=1, wait_s=0.2)
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with gate.turn():
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(5)
    waiter_result: list[str] = []

    def wait_once() -> None:
        try:
            with gate.turn():
                waiter_result.append("got")
        except Busy as exc:
            waiter_result.append(str(exc))

    waiter = threading.Thread(target=wait_once)
    waiter.start()
    time.sleep(0.05)  # the waiter occupies the single queue place
    with pytest.raises(Busy, match="1 scoring, 1 waiting"):
        with gate.turn():
            pass
    waiter.join(5)
    assert waiter_result == ["server busy: no scoring turn within 0.2 s"]
    release.set()
    holder.join(5)
    with gate.turn():  # free again
        pass
