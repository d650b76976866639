"""Reload flood against `granvae-edge serve`: the attack issue 14 measured, repeated.

Not a test: it prints one line per case. A real server process (tiny fixture bundle, token
file, the CLI's default reload gate) is flooded for --seconds by --flooders threads, each
opening a new connection per POST /reload (with the valid token, and without it), while one
keep-alive-less client keeps scoring one image at a time. Printed: the scoring client's answers
and how many were 200, reloads actually run, status counts of the flood, and the server's RSS
before and after.

    python benchmarks/reload_flood.py [--seconds 8] [--flooders 64]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "deploy")]
from edge_fixtures import edge_env, free_port, make_bundle, png_bytes  # noqa: E402

TOKEN = "flood-benchmark-token-0123456789"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _post(url: str, body: bytes | None, token: str | None) -> int:
    req = urllib.request.Request(url, data=body, method="POST")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return -1  # refused / reset: counted as no answer


def run(seconds: float, flooders: int, with_token: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="reload-flood-"))
    bundle = make_bundle(work / "bundle")
    token_file = work / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    port = free_port()
    cmd = [sys.executable, "-m", "granvae_edge", "serve", "--bundle", str(bundle), "--port",
           str(port), "--token-file", str(token_file), "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=edge_env(), stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            if _post(url + "/score", png_bytes(np.full((32, 32), 128, np.uint8)), None) == 200:
                break
            time.sleep(0.1)
        rss0 = _rss_mb(proc.pid)
        stop, flood = threading.Event(), collections.Counter()
        scores: list[int] = []
        image = png_bytes(np.full((32, 32), 128, np.uint8))

        def flooder() -> None:
            while not stop.is_set():
                flood[_post(url + "/reload", None, TOKEN if with_token else None)] += 1

        def scorer() -> None:
            while not stop.is_set():
                scores.append(_post(url + "/score", image, None))

        threads = [threading.Thread(target=flooder) for _ in range(flooders)]
        threads.append(threading.Thread(target=scorer))
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        elapsed = time.monotonic() - t0  # requests in flight at the stop finish first
        metrics = json.loads(urllib.request.urlopen(url + "/metrics", timeout=10).read())
        return {"token": with_token, "elapsed_s": round(elapsed, 1), "scores": len(scores),
                "scores_ok": scores.count(200),
                "flood": dict(flood), "reloads_run": metrics.get("reloads", {}),
                "rss_mb": (round(rss0, 1), round(_rss_mb(proc.pid), 1))}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--flooders", type=int, default=64)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, {args.flooders} flooders, {args.seconds:g} s")
    for with_token in (False, True):
        print(json.dumps(run(args.seconds, args.flooders, with_token)))


if __name__ == "__main__":
    main()
