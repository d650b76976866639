"""Does capture slow scoring? `granvae-edge serve` with capture off, on (5% of passes), on (all).

    python benchmarks/capture.py [--seconds 5] [--clients 1 16]

Same clients and body as benchmarks/serve.py (keep-alive HTTP/1.1 on 127.0.0.1, the tiny
fixture model, a 32x32 PNG that passes); the server runs as its own process, the spool in a
temporary folder (every kept frame is fsynced twice: image and record). Target (issue 17):
p99 with capture within 10% of p99 without. docs/line-loop.md quotes the table.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import tempfile
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    args = ap.parse_args()
    body = png_bytes(noisy_gray(np.random.default_rng(0), 20))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(Path(tmp) / "bundle", threshold=1.0)
        modes = {"off": [], "passes 5%": ["--capture", f"{tmp}/s1", "--pass-share", "0.05"],
                 "passes 100%": ["--capture", f"{tmp}/s2", "--pass-share", "1.0"]}  # fmt: skip
        for name, extra in modes.items():
            proc, port = start(bundle, extra)
            try:
                for c in args.clients:
                    rows.append((name, run_phase(port, body, c, args.seconds, args.warmup)))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} cores, load average {load} at the end (shared machine), "
          f"{args.seconds:g} s per phase")  # fmt: skip
    print("| capture | clients | req/s | errors | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows:
        print(f"| {name} | {r['clients']} | {r['req_per_s']} | {r['errors']} | "
              f"{r['p50_ms']} | {r['p99_ms']} |")  # fmt: skip


if __name__ == "__main__":
    main()
