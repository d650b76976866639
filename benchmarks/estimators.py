"""Bias and spread of the MWS and MSS aggregate-posterior estimators against exact values.

On a constructed set of N Gaussian posteriors (granvae.metrics.exact_terms)
log q(z) is summed over all N, so MI, TC, TC_between and group KL are exact
for the sampled z. Each estimator then sees `--repeats` uniform random
batches of size B; the script prints, per B, the bias (mean - exact) and the
spread (standard deviation over batches) of every term, plus the mean density
ratio q_hat / q (1 for MSS; > 1 for MWS, which over-weights the sample's own
posterior), and writes a figure.

    .venv/bin/python benchmarks/estimators.py            # figures in docs/estimators.md
    .venv/bin/python benchmarks/estimators.py --n 512 --repeats 50   # a quick look
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from granvae.metrics.exact_terms import (
    TERMS,
    correlated_set,
    draw_estimates,
    exact_log_densities,
    terms_from_densities,
)
from granvae.report.plots import figure_png, new_figure

GROUPS = [[0, 1], [2, 3]]
ESTIMATORS = ("mws", "mss")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="posteriors in the set (N)")
    p.add_argument("--posterior-std", type=float, default=0.25, help="typical posterior std")
    p.add_argument("--batches", default="16,32,64,128,256,512", help="batch sizes B")
    p.add_argument("--repeats", type=int, default=200, help="random batches per (estimator, B)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure", type=Path, default=Path("docs/estimators.png"))
    return p.parse_args()


def measure(args: argparse.Namespace, sizes: list[int]) -> tuple[dict, dict]:
    """exact terms, and {(estimator, B): {term: (bias, sd), "ratio": mean q_hat/q}}."""
    s = correlated_set(args.n, posterior_std=args.posterior_std, seed=args.seed)
    dens = exact_log_densities(s, GROUPS)
    exact = terms_from_densities(dens)
    out = {}
    for est in ESTIMATORS:
        for b in sizes:
            d = draw_estimates(s, GROUPS, b, est, args.repeats, seed=args.seed + b, exact=dens)
            terms = d.terms.items()
            row = {k: (float(v.mean() - exact[k]), float(v.std(ddof=1))) for k, v in terms}
            out[(est, b)] = {**row, "ratio": float(d.ratio.mean())}
    return exact, out


def print_table(exact: dict, results: dict, sizes: list[int]) -> None:
    print("exact: " + ", ".join(f"{k} {v:.3f}" for k, v in exact.items()))
    head = "| estimator | B | " + " | ".join(f"{t} bias (sd)" for t in TERMS) + " | q_hat/q |"
    print(head)
    print("|" + "---|" * (len(TERMS) + 3))
    for est in ESTIMATORS:
        for b in sizes:
            r = results[(est, b)]
            cells = " | ".join(f"{r[t][0]:+.3f} ({r[t][1]:.3f})" for t in TERMS)
            print(f"| {est} | {b} | {cells} | {r['ratio']:.3f} |")


def plot(exact: dict, results: dict, sizes: list[int], args: argparse.Namespace) -> bytes:
    fig = new_figure(14, 3.6)
    axes = fig.subplots(1, len(TERMS))
    for ax, term in zip(axes, TERMS, strict=True):
        for i, est in enumerate(ESTIMATORS):
            bias = np.array([results[(est, b)][term][0] for b in sizes])
            sd = np.array([results[(est, b)][term][1] for b in sizes])
            ax.errorbar(sizes, bias, yerr=sd, marker="o", capsize=3, color=f"C{i}", label=est)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.set_xlabel("batch size B")
        ax.set_title(f"{term} (exact {exact[term]:.2f} nats)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("estimate - exact (nats); bars: sd over batches")
    axes[0].legend()
    fig.suptitle(
        f"MWS vs MSS on N={args.n} posteriors (std ~{args.posterior_std}), "
        f"{args.repeats} random batches per point"
    )
    return figure_png(fig)


def main() -> None:
    args = parse()
    torch.set_num_threads(1)  # B x B x 4 matrices: threads only add contention
    sizes = [int(b) for b in args.batches.split(",")]
    start = time.perf_counter()
    exact, results = measure(args, sizes)
    print_table(exact, results, sizes)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    args.figure.write_bytes(plot(exact, results, sizes, args))
    print(f"figure: {args.figure}  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
