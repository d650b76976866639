"""Does capture slow scoring? `granvae-edge serve` with capture off, on (5% of passes), on (all).

    python benchmarks/capture.py [--seconds 3] [--rounds 3] [--clients 1 16] [--rate 200]

Same clients and body as benchmarks/serve.py (keep-alive HTTP/1.1 on 127.0.0.1, the tiny
fixture model, a 32x32 PNG that passes). The three servers run at once as their own processes
(spools in a temporary folder; every kept frame is fsynced twice: image and record) and are
measured in turns, ``--rounds`` times, so load from other jobs falls on all three alike; the
table shows each mode's median over rounds. Target (issue 17): p99 with capture within 10% of
p99 without, at 200 req/s. ``--rate R`` measures that: open loop, R requests per second spread
over the clients on a fixed schedule, each latency counted from the request's scheduled time
(so a stalled server is charged for the requests it delayed, not only the one it held).
docs/line-loop.md quotes the table.
"""

from __future__ import annotations

import argparse
import http.client
import os
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
sys.path.insert(0, str(REPO / "benchmarks"))
from edge_fixtures import edge_env, free_port, make_bundle, noisy_gray, png_bytes  # noqa: E402
from serve import run_phase  # noqa: E402


def start(bundle: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "granvae_edge", "serve", "--bundle", str(bundle),
           "--port", str(port), "--threads", "1", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, env=edge_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def paced(port: int, body: bytes, clients: int, rate: float, seconds: float,
          warmup: float) -> dict:  # fmt: skip
    """Open loop: client i sends at t0 + (k * clients + i) / rate; latency from that time."""
    t0 = time.perf_counter() + 0.2
    stop = t0 + warmup + seconds
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        k = 0
        while (due := t0 + (k * clients + i) / rate) < stop:
            time.sleep(max(0.0, due - time.perf_counter()))
            try:
                conn.request("POST", "/score", body, {"Content-Type": "image/png"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            done = time.perf_counter()
            with lock:
                if due >= t0 + warmup:
                    lat.append((done - due) * 1000)
                    errors[0] += 0 if ok else 1
            k += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    arr = np.asarray(lat)
    return {"req_per_s": arr.size / seconds, "errors": errors[0],
            "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rate", type=float, default=None,
                    help="open loop: requests per second over all clients (e.g. 200)")
    args = ap.parse_args()
    body = png_bytes(noisy_gray(np.random.default_rng(0), 20))
    results: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(Path(tmp) / "bundle", threshold=1.0)
        modes = {"off": [], "passes 5%": ["--capture", f"{tmp}/s1", "--pass-share", "0.05"],
                 "passes 100%": ["--capture", f"{tmp}/s2", "--pass-share", "1.0"]}  # fmt: skip
        servers = {name: start(bundle, extra) for name, extra in modes.items()}
        try:
            for _ in range(args.rounds):
                for c in args.clients:
                    for name, (_proc, port) in servers.items():
                        row = (paced(port, body, c, args.rate, args.seconds, args.warmup)
                               if args.rate else run_phase(port, body, c, args.seconds,
                                                           args.warmup))  # fmt: skip
                        results.setdefault((name, c), []).append(row)
        finally:
            for proc, _port in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} cores, load average {load} at the end (shared machine), "
          f"{args.seconds:g} s per phase, {args.rounds} rounds, medians over rounds"
          + (f", open loop at {args.rate:g} req/s" if args.rate else ", closed loop"))  # fmt: skip
    print("| capture | clients | req/s | errors | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for (name, c), rows in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med = {k: float(np.median([r[k] for r in rows])) for k in ("req_per_s", "p50_ms", "p99_ms")}
        errors = sum(r["errors"] for r in rows)
        print(f"| {name} | {c} | {med['req_per_s']:.0f} | {errors} | {med['p50_ms']:.2f} | "
              f"{med['p99_ms']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
