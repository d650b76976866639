"""How often the promotion rule refuses a challenger, by how much worse it truly is.

    python benchmarks/decisions.py                      # the defaults of params.yaml
    python benchmarks/decisions.py --sims 400 --rho 0.5 --recall 0.5   # a harder case

Simulates the promotion decision (granvae.metrics.noninferiority, the function `granvae
promote` calls) at the default evaluation sizes: params.yaml data.n_val good images calibrate
the threshold, half of data.n_test are defects, promotion.margin / confidence / bootstrap as
written. Scores are binormal (granvae.metrics.simulate): the champion catches ``--recall`` of
the defects at evaluation.false_alarm_rate, the challenger that plus the true difference, and
the two models' scores on one image correlate with ``--rho``. Prints one JSON object per line:
true_difference, refusal_rate, n_good, n_defect, margin (and the rest of the setting).

Targets at the defaults: a challenger 0.10 worse refused >= 90%; an equal one accepted >= 80%.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import yaml

from granvae.metrics.noninferiority import non_inferiority
from granvae.metrics.simulate import DEFAULT_RECALL, DEFAULT_RHO, simulate_paired_scores

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
DIFFERENCES = (-0.20, -0.10, -0.05, 0.0, 0.05)


def _defaults() -> dict:
    params = yaml.safe_load(PARAMS.read_text())
    data, promo, ev = params["data"], params["promotion"], params["evaluation"]
    return {
        "n_good": int(data["n_val"]),
        "n_defect": int(data["n_test"]) // 2,  # the generators' defect_fraction 0.5
        "margin": float(promo["margin"]),
        "confidence": float(promo["confidence"]),
        "bootstrap": int(promo["bootstrap"]),
        "far": float(ev["false_alarm_rate"]),
    }


def refusal_rate(difference: float, args: argparse.Namespace, rng: np.random.Generator) -> float:
    refused = 0
    for _ in range(args.sims):
        s = simulate_paired_scores(
            rng, args.n_good, args.n_defect, difference, args.far, args.recall, args.rho
        )
        refused += non_inferiority(
            s.good_challenger, s.defect_challenger, s.good_champion, s.defect_champion,
            args.far, args.margin, args.confidence, args.bootstrap, rng,
        ).refused  # fmt: skip
    return refused / args.sims


def main() -> None:
    d = _defaults()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=400, help="simulated evaluations per row")
    parser.add_argument("--n-good", type=int, default=d["n_good"])
    parser.add_argument("--n-defect", type=int, default=d["n_defect"])
    parser.add_argument("--margin", type=float, default=d["margin"])
    parser.add_argument("--confidence", type=float, default=d["confidence"])
    parser.add_argument("--bootstrap", type=int, default=d["bootstrap"])
    parser.add_argument("--far", type=float, default=d["far"])
    parser.add_argument("--recall", type=float, default=DEFAULT_RECALL, help="champion's recall")
    parser.add_argument("--rho", type=float, default=DEFAULT_RHO, help="score correlation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for diff in DIFFERENCES:
        start = time.perf_counter()
        rate = refusal_rate(diff, args, rng)
        row = {
            "true_difference": diff,
            "refusal_rate": round(rate, 4),
            "n_good": args.n_good,
            "n_defect": args.n_defect,
            "margin": args.margin,
            "confidence": args.confidence,
            "recall_champion": args.recall,
            "rho": args.rho,
            "sims": args.sims,
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
