"""A Bernoulli CUSUM on the line's alarm stream, with its error rates computed exactly.

Why CUSUM: the calibrated threshold promises a false-alarm rate p0 on good parts; a drift
(lighting, fixture, material) raises it. A fixed-window binomial test either waits a whole
window or tests often and fires by chance; the CUSUM (Page 1954; for Bernoulli data Reynolds
and Stoumbos 1999) accumulates the log-likelihood ratio of "rate p1" against "rate p0" part by
part and is the fastest detector for a given false-trigger rate.

The statistic is kept in integers so its run lengths can be computed exactly: each reject adds
``up`` and each pass subtracts 1, with ``up = round(log(p1/p0) / -log((1-p1)/(1-p0)))``, the
log-likelihood ratio in units of one pass; S = max(0, S + step) and the test fires at S >= h.
S then lives on the states 0..h-1, a Markov chain whose average run length (ARL) solves one
linear system: ARL0 at p0 (parts between false triggers; the false-trigger rate per part is
1/ARL0) and ARL1 at p1 (the detection delay from a clean start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CusumDesign:
    """The test's parameters and its computed error rates."""

    p0: float  # the calibrated false-alarm rate (in control)
    p1: float  # the drifted rate the test is tuned to catch
    up: int  # increment of S on a reject (a pass is -1)
    h: int  # fire when S >= h
    arl0: float  # parts between false triggers at rate p0
    arl1: float  # parts to detection at rate p1, from S = 0

    @property
    def false_triggers_per_100k(self) -> float:
        return 1e5 / self.arl0

    def to_json(self) -> dict[str, float]:
        return {"p0": self.p0, "p1": self.p1, "up": self.up, "h": self.h,
                "arl0": self.arl0, "arl1": self.arl1,
                "false_triggers_per_100k": self.false_triggers_per_100k}  # fmt: skip


def _check_rates(p0: float, p1: float) -> None:
    if not 0.0 < p0 < p1 < 1.0:
        raise ValueError(f"need 0 < p0 < p1 < 1, got p0={p0}, p1={p1}")


def llr_step(p0: float, p1: float) -> int:
    """A reject's log-likelihood ratio in units of a pass's (negative) one, rounded."""
    _check_rates(p0, p1)
    return max(1, round(math.log(p1 / p0) / -math.log((1.0 - p1) / (1.0 - p0))))


def run_length(p: float, up: int, h: int, start: int = 0) -> float:
    """Exact average run length of the integer CUSUM when each part rejects with prob. p.

    States 0..h-1 are transient; from s a reject moves to s + up (absorbed if >= h), a pass to
    max(0, s - 1). ARL = (I - Q)^-1 1, read at ``start``.
    """
    if h < 1 or up < 1:
        raise ValueError(f"need h >= 1 and up >= 1, got h={h}, up={up}")
    q = np.zeros((h, h))
    for s in range(h):
        q[s, max(0, s - 1)] += 1.0 - p
        if s + up < h:
            q[s, s + up] += p
    return float(np.linalg.solve(np.eye(h) - q, np.ones(h))[start])


def design(p0: float, p1: float, min_arl0: float = 1e6) -> CusumDesign:
    """The smallest h whose ARL0 reaches ``min_arl0`` (fastest detection at that guarantee).

    ARL0 grows about geometrically in h, so a doubling search then bisection takes ~30 solves.
    """
    up = llr_step(p0, p1)
    lo, hi = 1, up + 1
    while run_length(p0, up, hi) < min_arl0:
        lo, hi = hi, hi * 2
        if hi > 200_000:
            raise ValueError(f"no h up to {hi} reaches ARL0 {min_arl0:g} for p0={p0}, p1={p1}")
    while lo < hi:  # smallest h with ARL0(h) >= min_arl0; ARL0 is non-decreasing in h
        mid = (lo + hi) // 2
        if run_length(p0, up, mid) >= min_arl0:
            hi = mid
        else:
            lo = mid + 1
    return CusumDesign(p0, p1, up, lo, run_length(p0, up, lo), run_length(p1, up, lo))


@dataclass(frozen=True)
class CusumPath:
    """The statistic after every part and the parts (0-based) at which the test fired."""

    statistic: np.ndarray
    fired_at: list[int]


def run(rejects: np.ndarray, d: CusumDesign, restart: bool = True) -> CusumPath:
    """Run the test over a 0/1 reject stream; after a firing it restarts from 0 if asked."""
    x = np.asarray(rejects).astype(bool).ravel()
    path = np.empty(x.size, dtype=np.int64)
    s, fired = 0, []
    for i, reject in enumerate(x):
        s = s + d.up if reject else max(0, s - 1)
        if s >= d.h:
            fired.append(i)
            if restart:
                s = 0
        path[i] = s
    return CusumPath(path, fired)


def simulate_triggers(
    d: CusumDesign, p: float, n_parts: int, n_streams: int, rng: np.random.Generator
) -> int:
    """Firings over ``n_streams`` independent streams of ``n_parts`` parts at reject rate p
    (restarting after each firing): the check of 1/ARL0 by brute force."""
    s = np.zeros(n_streams, dtype=np.int64)
    fired = 0
    for _ in range(n_parts):
        reject = rng.random(n_streams) < p
        s = np.where(reject, s + d.up, np.maximum(s - 1, 0))
        hit = s >= d.h
        fired += int(hit.sum())
        s[hit] = 0
    return fired


def simulate_delays(
    d: CusumDesign, p: float, n_streams: int, rng: np.random.Generator, cap: int = 100_000
) -> np.ndarray:
    """Parts until the first firing (1-based) in each stream at reject rate p, from S = 0;
    streams that have not fired after ``cap`` parts report ``cap``."""
    s = np.zeros(n_streams, dtype=np.int64)
    delay = np.full(n_streams, cap, dtype=np.int64)
    alive = np.ones(n_streams, dtype=bool)
    for t in range(1, cap + 1):
        reject = rng.random(n_streams) < p
        s = np.where(reject, s + d.up, np.maximum(s - 1, 0))
        hit = alive & (s >= d.h)
        delay[hit] = t
        alive &= ~hit
        if not alive.any():
            break
    return delay
