"""Figures of the line monitor's alarm-rate test: false triggers and detection delay.

    python benchmarks/monitor.py [--parts 20000000] [--streams 10000] [--seed 0]

For the default design (calibrated false-alarm rate p0 = 1%, tuned to catch p1 = 5%, at most
one false trigger per 100,000 good parts) it prints the exact ARLs from the Markov chain, then
checks them by simulation: firings over ``--parts`` undrifted parts (restarting after each),
and the delay to the first firing after a drift to 5% (and to 3%, 10%) from a clean start and
from the steady state of an undrifted line. docs/line-loop.md quotes its output.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from granvae.monitor import alarm_rate


def _steady_start(d: alarm_rate.CusumDesign, n: int, rng: np.random.Generator) -> np.ndarray:
    """States of n undrifted lines after 5,000 parts that have not fired (drift starts there)."""
    s = np.zeros(n, dtype=np.int64)
    for _ in range(5000):
        s = np.where(rng.random(n) < d.p0, s + d.up, np.maximum(s - 1, 0))
        s[s >= d.h] = 0
    return s


def _delays(d: alarm_rate.CusumDesign, p: float, start: np.ndarray, rng) -> np.ndarray:
    s, delay = start.copy(), np.zeros(start.size, dtype=np.int64)
    alive = np.ones(start.size, dtype=bool)
    t = 0
    while alive.any():
        t += 1
        s = np.where(rng.random(s.size) < p, s + d.up, np.maximum(s - 1, 0))
        hit = alive & (s >= d.h)
        delay[hit] = t
        alive &= ~hit
    return delay


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=20_000_000)
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    d = alarm_rate.design(0.01, 0.05, min_arl0=1e5)
    print(f"design p0={d.p0} p1={d.p1}: up={d.up} h={d.h}  exact ARL0={d.arl0:,.0f} "
          f"({d.false_triggers_per_100k:.3f} false triggers per 100,000 parts)  "
          f"exact ARL1={d.arl1:.1f} parts")  # fmt: skip
    t0 = time.time()
    per_stream = args.parts // args.streams
    fired = alarm_rate.simulate_triggers(d, d.p0, per_stream, args.streams, rng)
    parts = per_stream * args.streams
    lo, hi = [x / parts * 1e5 for x in (fired - 2 * fired**0.5, fired + 2 * fired**0.5)]
    print(f"simulated undrifted: {fired} firings in {parts:,} parts = "
          f"{fired / parts * 1e5:.3f} per 100,000 (about [{lo:.3f}, {hi:.3f}]); "
          f"{time.time() - t0:.0f} s")  # fmt: skip
    zero = np.zeros(args.streams, dtype=np.int64)
    steady = _steady_start(d, args.streams, rng)
    for p in (0.03, 0.05, 0.10):
        for label, start in (("clean start", zero), ("steady state", steady)):
            delay = _delays(d, p, start, rng)
            print(f"drift to {p:.0%} ({label}): delay mean {delay.mean():.0f}, median "
                  f"{np.median(delay):.0f}, p90 {np.percentile(delay, 90):.0f} parts; "
                  f"{np.mean(delay <= 200):.1%} caught within 200 parts"
                  + (f" (exact ARL {alarm_rate.run_length(p, d.up, d.h):.1f})"
                     if label == "clean start" else ""))  # fmt: skip


if __name__ == "__main__":
    main()
