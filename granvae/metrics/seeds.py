"""Seeds as repeats: mean and 95% interval per configuration, paired differences across g.

A sweep candidate is (configuration, seed). One seed says nothing about
whether granularity matters: the ELBO of two seeds of the same configuration
can differ more than two granularities do. These pure functions turn the
sweep's result rows into what a claim needs:

- ``aggregate_rows``: one row per configuration (every candidate key but the
  seed) with, per metric, the mean over finished seeds and a Student-t 95%
  interval (t quantile with n - 1 degrees of freedom, sd / sqrt(n)).
- ``paired_differences``: for each capacity, metric(g) - metric(reference g)
  on the seeds both finished; seeds share data order and initialisation
  seed, so pairing removes the seed-to-seed part of the noise.
- ``tied_with_best``: the granularities a capacity cannot tell apart from its
  best one, which is what the report needs before it calls a curve a "V".

Intervals are NaN (never zero-width) when fewer than 2 seeds finished.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

CONFIDENCE = 0.95
CONFIG_KEYS = (
    "objective", "latent_dim", "beta", "alpha", "gamma", "estimator", "tile", "granularity",
)  # fmt: skip
CAPACITY_KEYS = ("objective", "latent_dim", "beta", "alpha", "gamma", "estimator", "tile")
DEFAULT_METRICS = (
    "elbo", "iwae_elbo", "recon", "kl", "mi", "tc", "tc_between", "group_kl",
    "image_auroc", "recall_at_far", "pixel_auroc", "mig", "dci_disentanglement", "sap",
    "factor_vae_accuracy",
)  # fmt: skip
NON_METRICS = frozenset(
    {
        *CONFIG_KEYS,
        "candidate_id",
        "seed",
        "status",
        "reason",
        "device",
        "epochs",
        "iwae_k",
        "n_good",
        "n_defect",
        "attribution_n_defect",
    }
)  # identity and bookkeeping columns: the same for every seed, nothing to average


def mean_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """{"mean", "low", "high", "n"} of the finite values; t interval, NaN bounds when n < 2."""
    x = np.asarray([v for v in values if _finite(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": n}
    from scipy import stats  # ~1 s: lazily, granvae.select (and `granvae models`) imports us

    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def _finite(v: object) -> bool:
    try:
        return math.isfinite(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def config_id(row: Mapping) -> str:
    """The candidate_id without its seed suffix: `g2-b4-d10` for `g2-b4-d10-s0`."""
    cid = str(row.get("candidate_id", ""))
    head, sep, tail = cid.rpartition("-s")
    return head if sep and tail.isdigit() else cid


def _key(row: Mapping, keys: Sequence[str]) -> tuple:
    return tuple(row.get(k) for k in keys)


def metric_columns(rows: Sequence[Mapping]) -> list[str]:
    """Numeric columns of finished rows, known metrics first: what aggregate_rows summarises."""
    seen: dict[str, None] = {}
    for row in rows:
        if row.get("status", "finished") != "finished":
            continue
        for k, v in row.items():
            if k not in NON_METRICS and _finite(v) and not isinstance(v, bool):
                seen[k] = None
    known = [m for m in DEFAULT_METRICS if m in seen]
    return known + sorted(k for k in seen if k not in known)


def aggregate_rows(
    rows: Sequence[Mapping], metrics: Sequence[str] | None = None, confidence: float = CONFIDENCE
) -> list[dict]:
    """One dict per configuration, in first-seen order, with these keys:

    - the configuration: objective, latent_dim, beta, alpha, gamma, estimator,
      granularity (those present in the rows), and ``config_id``;
    - ``seeds`` (finished seeds, sorted), ``n_seeds`` (their count),
      ``n_failed`` (candidates of this configuration that did not finish);
    - per metric m: ``m_mean``, ``m_ci_low``, ``m_ci_high`` (95% t interval
      over finished seeds; NaN bounds with fewer than 2) and ``m_n`` (seeds
      with a finite value).

    ``metrics`` defaults to every numeric column of the finished rows.
    """
    metrics = list(metrics) if metrics is not None else metric_columns(rows)
    keys = [k for k in CONFIG_KEYS if any(k in r for r in rows)]
    groups: dict[tuple, list[Mapping]] = defaultdict(list)
    for row in rows:
        groups[_key(row, keys)].append(row)
    out = []
    for key, members in groups.items():
        done = [r for r in members if r.get("status", "finished") == "finished"]
        agg = dict(zip(keys, key, strict=True))
        agg["config_id"] = config_id(members[0])
        agg["seeds"] = sorted(int(r["seed"]) for r in done if "seed" in r)
        agg["n_seeds"] = len(done)
        agg["n_failed"] = len(members) - len(done)
        for m in metrics:
            s = mean_interval((r.get(m) for r in done), confidence)
            agg.update({f"{m}_mean": s["mean"], f"{m}_ci_low": s["low"],
                        f"{m}_ci_high": s["high"], f"{m}_n": s["n"]})  # fmt: skip
        out.append(agg)
    return out


def _by_seed(rows: Sequence[Mapping], metric: str) -> dict[tuple, dict[int, dict[int, float]]]:
    """capacity -> granularity -> seed -> finite metric value (finished rows only)."""
    table: dict[tuple, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    keys = [k for k in CAPACITY_KEYS if any(k in r for r in rows)]
    for r in rows:
        if r.get("status", "finished") == "finished" and _finite(r.get(metric)):
            cap = _key(r, keys)
            table[cap][int(r["granularity"])][int(r["seed"])] = float(r[metric])
    return table


def paired_differences(
    rows: Sequence[Mapping],
    metric: str = "elbo",
    reference: int | None = 1,
    confidence: float = CONFIDENCE,
) -> list[dict]:
    """metric(g) - metric(reference) per capacity and g, on the seeds both finished.

    reference=None compares each g with the capacity's best g by mean. Each
    row: ``capacity`` (dict of the capacity keys), ``granularity``,
    ``reference``, ``seeds`` (the paired seeds), ``n``, ``mean_diff``,
    ``ci_low``, ``ci_high`` (t interval of the differences), ``p_value``
    (two-sided paired t test; NaN with fewer than 2 pairs or no spread) and
    ``differs`` (the interval excludes 0).
    """
    keys = [k for k in CAPACITY_KEYS if any(k in r for r in rows)]
    out = []
    for cap, by_g in _by_seed(rows, metric).items():
        ref = reference if reference is not None else _best_g(by_g)
        if ref not in by_g:
            continue
        for g in sorted(by_g):
            if g == ref:
                continue
            seeds = sorted(set(by_g[g]) & set(by_g[ref]))
            diffs = [by_g[g][s] - by_g[ref][s] for s in seeds]
            s = mean_interval(diffs, confidence)
            p = math.nan
            if len(diffs) >= 2 and np.std(diffs) > 0:
                from scipy import stats  # lazily, as in mean_interval

                p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
            out.append({
                "capacity": dict(zip(keys, cap, strict=True)), "granularity": g,
                "reference": ref, "seeds": seeds, "n": len(seeds), "mean_diff": s["mean"],
                "ci_low": s["low"], "ci_high": s["high"], "p_value": p,
                "differs": bool(s["low"] > 0 or s["high"] < 0),
            })  # fmt: skip
    return out


def _best_g(by_g: Mapping[int, Mapping[int, float]]) -> int:
    """Highest mean over the seeds every g finished (all seeds when none is shared).

    Means over different seed sets are not comparable: a g whose bad seed
    failed would look best. Ties go to the smaller g.
    """
    shared = set.intersection(*(set(v) for v in by_g.values()))

    def score(g: int) -> tuple[float, int]:
        values = [v for s, v in by_g[g].items() if not shared or s in shared]
        return float(np.mean(values)), -g

    return max(by_g, key=score)


def tied_with_best(
    rows: Sequence[Mapping], metric: str = "elbo", confidence: float = CONFIDENCE
) -> dict[tuple, dict]:
    """Per capacity: {"best": g with the highest mean, "tied": sorted gs not shown worse}.

    A granularity is tied with the best unless its paired difference to the
    best has an interval entirely below 0; with fewer than 2 paired seeds
    nothing is shown, so it stays tied. Keys are the capacity tuples
    (CAPACITY_KEYS present in the rows).
    """
    out: dict[tuple, dict] = {}
    for cap, by_g in _by_seed(rows, metric).items():
        best = _best_g(by_g)
        tied = {best}
        for g in by_g:
            seeds = sorted(set(by_g[g]) & set(by_g[best]))
            s = mean_interval([by_g[g][x] - by_g[best][x] for x in seeds], confidence)
            if g != best and not s["high"] < 0:
                tied.add(g)
        out[cap] = {"best": best, "tied": sorted(tied)}
    return out
