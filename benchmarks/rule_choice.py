"""Does the per-candidate rule choice pick the rule that catches the real defects?

    python benchmarks/rule_choice.py --datasets surfaces,brick,grass,gravel --seeds 0,1,2 \
        --models runs/bench-inspection --out runs/bench-rule-choice

For each data set and seed, the benchmark's granvae model (benchmarks/inspection.py's
splits; reused from --models when a previous run left it there, trained otherwise) goes
through exactly what the retrain flow does to a whole-image candidate
(granvae.rule_choice.choose_score_rule): `evaluation.score` and its `score_alternatives`
are each scored on synthetic defects drawn on the *validation* images, thresholded at 1%
false alarms on the same images' good scores, and the better rule is kept. Then every rule
is measured on the test split's *real* defects with the threshold from the good validation
images, so the table shows what the choice cost or gained against always using one rule.
Writes results.json and table.md under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import inspection as bench  # noqa: E402

from granvae.config import load_settings  # noqa: E402
from granvae.metrics.thresholds import calibrate_threshold  # noqa: E402
from granvae.models import FactorizedVAE  # noqa: E402
from granvae.objectives import make_groups  # noqa: E402
from granvae.rule_choice import choose_score_rule  # noqa: E402
from granvae.scoring import InspectionHead, fit_head, score_images  # noqa: E402
from granvae.scoring.features import fit_feature_bank  # noqa: E402
from pipelines.cli import parse_sets  # noqa: E402


def head_for(name: str, seed: int, splits: dict, settings, args) -> InspectionHead:
    """The model a previous inspection benchmark trained, else a fresh one (same recipe)."""
    model_dir = Path(args.models) / name / f"seed{seed}" / "model"
    if not model_dir.is_dir():
        return bench.train_vae(splits, settings, seed, Path(args.out) / name)[0]
    model = FactorizedVAE.load(model_dir).eval()
    head = InspectionHead(
        model, make_groups(model.config.latent_dim, settings.objective.granularity), "neg_elbo"
    )
    fit_head(head, splits["train"].images)
    fit_feature_bank(head, splits["train"].images, np.random.default_rng(seed))
    return head


def real_recall(head: InspectionHead, rule: str, splits: dict) -> float:
    head.score_kind = rule
    good = score_images(head, splits["val"].images)["score"]
    test = splits["test"]
    bad = score_images(head, test.images[test.labels > 0])["score"]
    return float(np.mean(bad > calibrate_threshold(good, bench.FAR).value))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="surfaces,brick,grass,gravel")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default="runs/bench-inspection",
                    help="an inspection benchmark's --out whose models to reuse")  # fmt: skip
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--n-val", type=int, default=256)
    ap.add_argument("--n-test", type=int, default=256)
    ap.add_argument("--set", action="append", default=[], help="params override key=value")
    ap.add_argument("--out", default="runs/bench-rule-choice")
    args = ap.parse_args()
    settings = load_settings(ROOT / "params.yaml", parse_sets(args.set))
    rules = [settings.evaluation.score, *settings.evaluation.score_alternatives]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in [d for d in args.datasets.split(",") if d]:
        splits, _ = bench.load(name, args)
        for seed in [int(s) for s in args.seeds.split(",")]:
            head = head_for(name, seed, splits, settings, args)
            metrics = choose_score_rule(head, splits["val"].images, rules, bench.FAR, seed)
            chosen = head.score_kind
            row = {"data": name, "seed": seed, "chosen": chosen,
                   "synthetic": {r: metrics[f"choice_{r}_synthetic_recall"] for r in rules},
                   "real": {r: real_recall(head, r, splits) for r in rules}}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
            (out / "results.json").write_text(json.dumps(rows, indent=1))
    lines = ["| data | seed | chosen | " + " | ".join(f"{r}: synthetic / real" for r in rules)
             + " | real recall of the choice | best real |",
             "|---|---|---|" + "---|" * len(rules) + "---|---|"]  # fmt: skip
    for r in rows:
        cells = " | ".join(f"{r['synthetic'][k]:.3f} / {r['real'][k]:.3f}" for k in rules)
        lines.append(f"| {r['data']} | {r['seed']} | {r['chosen']} | {cells} | "
                     f"{r['real'][r['chosen']]:.3f} | {max(r['real'].values()):.3f} |")  # fmt: skip
    lines += ["", "| data | always " + " | always ".join(rules) + " | with the choice |",
              "|---|" + "---|" * (len(rules) + 1)]
    for name in dict.fromkeys(r["data"] for r in rows):
        mine = [r for r in rows if r["data"] == name]
        means = [np.mean([r["real"][k] for r in mine]) for k in rules]
        chosen = np.mean([r["real"][r["chosen"]] for r in mine])
        lines.append(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {chosen:.3f} |")
    md = "\n".join(lines)
    (out / "table.md").write_text(md + "\n")
    print(md)
    print(f"\nrules: {rules}; models from {args.models}; mean real recall over seeds "
          "at 1% false alarms (threshold from the good validation images)")


if __name__ == "__main__":
    main()
