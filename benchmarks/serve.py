"""HTTP serving benchmark for `granvae-edge serve`: 1 keep-alive client, then 16 at once.

Not a test: it prints one table (and, with --json, writes the figures). The server runs as its
own process, exactly as on a device; clients are keep-alive HTTP/1.1 connections on 127.0.0.1,
each posting the same small PNG. Targets (issue 9, 2-core machine): 1 client >= 200 req/s at
p50 <= 3 ms; 16 clients >= 400 req/s with p99 <= 50 ms.

    python benchmarks/serve.py [--bundle DIR] [--seconds 5] [--clients 1 16] [--json out.json]

Without --bundle a tiny fixture model (tests/edge_fixtures.py, 32x32 grey) is served, so the
figures measure the server (HTTP, decode, admission), not a particular network's FLOPs; pass a
real exported bundle to measure that model on top.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from edge_fixtures import edge_env, free_port, make_bundle, noisy_gray, png_bytes  # noqa: E402


def start_server(bundle: Path, threads: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "granvae_edge", "serve", "--bundle", str(bundle),
           "--port", str(port), "--threads", str(threads)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=edge_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def client(port: int, body: bytes, stop_at: float, warm_until: float, out: list) -> None:
    """Post until stop_at on one keep-alive connection; keep latencies after warm_until."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat, errors = [], 0
    while (now := time.perf_counter()) < stop_at:
        conn.request("POST", "/score", body, {"Content-Type": "image/png"})
        resp = conn.getresponse()
        resp.read()
        done = time.perf_counter()
        if resp.status != 200:
            errors += 1
        if now >= warm_until:
            lat.append((done - now) * 1000.0)
    conn.close()
    out.append((lat, errors))


def run_phase(port: int, body: bytes, clients: int, seconds: float, warmup: float) -> dict:
    results: list = []
    start = time.perf_counter()
    warm_until, stop_at = start + warmup, start + warmup + seconds
    threads = [threading.Thread(target=client, args=(port, body, stop_at, warm_until, results))
               for _ in range(clients)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.concatenate([np.asarray(r[0]) for r in results])
    return {
        "clients": clients,
        "requests": int(lat.size),
        "errors": int(sum(r[1] for r in results)),
        "req_per_s": round(lat.size / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or make_bundle(Path(tmp) / "bundle", threshold=1.0)
        body = png_bytes(noisy_gray(np.random.default_rng(0), 20))
        proc, port = start_server(bundle, args.threads)
        try:
            rows = [run_phase(port, body, c, args.seconds, args.warmup) for c in args.clients]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load} when the benchmark ended (the machine is shared)"
    )
    print(f"granvae-edge serve, {machine}, {args.seconds:g} s per phase, {len(body)} B PNG body")
    print("| clients | requests | errors | req/s | p50 ms | p95 ms | p99 ms |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['req_per_s']} | "
              f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
