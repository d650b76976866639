"""Does the latent group that explains a flagged defect predict its class? Per g, per seed.

Reads a finished sweep (``granvae sweep``; every candidate keeps its model, scoring
statistics and calibrated threshold) and its dataset store:

    python benchmarks/attribution.py --sweep runs/exp/g-surfaces --data runs/exp/surfaces-data

For each candidate with more than one latent group: the test defect images its own
threshold flags; per image the region attribution (granvae.metrics.attribution_region:
reset each group's posterior mean to the mean over good training images, share of the
rule's anomaly map inside the defect mask that goes away); the explaining group; the
permutation test of class vs group (NMI, --perm shufflings, seeded). Per granularity:
each seed's p and Fisher's combined p, and per class the group that fires most often.
Writes attribution.json and attribution.md into the sweep folder and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from granvae.data.store import load_dataset  # noqa: E402
from granvae.metrics.attribution import mean_latent  # noqa: E402
from granvae.metrics.attribution_region import (  # noqa: E402
    class_group_test,
    combine_seeds,
    explaining_groups,
    head_region_drops,
)
from granvae.metrics.thresholds import Threshold  # noqa: E402
from granvae.scoring import load_head  # noqa: E402


def candidate_row(cdir: Path, row: dict, splits: dict, class_names, n_perm: int) -> dict | None:
    g, seed = int(row["granularity"]), int(row["seed"])
    head = load_head(cdir, g)
    n_groups = head.groups.shape[1]
    if n_groups < 2:
        return None  # one group: nothing to attribute between
    test = splits["test"]
    threshold = Threshold.from_dict(json.loads((cdir / "threshold.json").read_text()))
    scores = saved_test_scores(cdir)
    flagged = (test.labels > 0) & threshold.is_defect(scores)
    good_mu = mean_latent(head.model, splits["train"].images)
    drops = head_region_drops(head, test.images[flagged], test.masks[flagged], good_mu)
    tops = explaining_groups(drops)
    keep = tops >= 0
    classes, tops = test.labels[flagged][keep], tops[keep]
    stats = class_group_test(classes, tops, n_perm=n_perm, rng=np.random.default_rng(seed))
    per_class = {}
    for k, name in enumerate(class_names[1:], start=1):
        counts = np.bincount(tops[classes == k], minlength=n_groups)
        n = int(counts.sum())
        per_class[name] = {
            "n": n, "counts": counts.tolist(),
            "top_group": int(counts.argmax()) if n else None,
            "share": float(counts.max() / n) if n else math.nan,
        }  # fmt: skip
    best = drops[keep][np.arange(int(keep.sum())), tops] if keep.any() else np.array([])
    return {
        "candidate_id": row["candidate_id"], "granularity": g, "seed": seed,
        "n_groups": n_groups, "n_flagged_defects": int(flagged.sum()),
        "mean_explained_share": float(best.mean()) if best.size else math.nan,
        "kl_attribution_pvalue": float(row.get("attribution_pvalue", math.nan) or math.nan),
        **stats, "per_class": per_class,
    }  # fmt: skip


def saved_test_scores(cdir: Path) -> np.ndarray:
    """The test scores evaluation saved (scores.npz), so flags match the sweep's recall."""
    return np.load(cdir / "scores.npz")["test_score"]


def summarise(rows: list[dict]) -> list[dict]:
    by_g: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_g[r["granularity"]].append(r)
    out = []
    for g in sorted(by_g):
        rs = sorted(by_g[g], key=lambda r: r["seed"])
        out.append({
            "granularity": g, "n_groups": rs[0]["n_groups"], "seeds": [r["seed"] for r in rs],
            "p_values": [r["p_value"] for r in rs], "fisher_p": combine_seeds(
                [r["p_value"] for r in rs]),
            "nmi": [r["nmi"] for r in rs], "accuracy": [r["accuracy"] for r in rs],
            "chance_accuracy": [r["chance_accuracy"] for r in rs],
            "n": [int(r["n"]) for r in rs],
            "kl_attribution_p": [r["kl_attribution_pvalue"] for r in rs],
            "explained": [r["mean_explained_share"] for r in rs],
        })  # fmt: skip
    return out


def _fmt(values, spec: str = ".3f") -> str:
    return ", ".join("nan" if not math.isfinite(v) else format(v, spec) for v in values)


def render(summary: list[dict], rows: list[dict], class_names) -> str:
    lines = [
        "| g (groups) | flagged defects per seed | NMI per seed | best-map accuracy (majority "
        "class) | region p per seed | Fisher p | KL-attribution p per seed | mean in-mask "
        "share removed by the explaining group |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        acc = "; ".join(f"{a:.2f} ({c:.2f})" for a, c in
                        zip(s["accuracy"], s["chance_accuracy"], strict=True))  # fmt: skip
        lines.append(
            f"| {s['granularity']} ({s['n_groups']}) | {', '.join(map(str, s['n']))} | "
            f"{_fmt(s['nmi'])} | {acc} | {_fmt(s['p_values'], '.4f')} | {s['fisher_p']:.2g} | "
            f"{_fmt(s['kl_attribution_p'])} | {_fmt(s['explained'], '.2f')} |"
        )
    lines += ["", "Explaining group per class (most frequent group, its share), per seed:", "",
              "| g | seed | " + " | ".join(class_names[1:]) + " |",
              "|---|---|" + "---|" * (len(class_names) - 1)]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r["granularity"], r["seed"])):
        cells = []
        for name in class_names[1:]:
            c = r["per_class"][name]
            cells.append("-" if not c["n"] else f"{c['top_group']} ({c['share']:.2f}, n {c['n']})")
        lines.append(f"| {r['granularity']} | {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", required=True, help="finished sweep folder")
    ap.add_argument("--data", required=True, help="its dataset store")
    ap.add_argument("--perm", type=int, default=1000, help="label shufflings per test")
    args = ap.parse_args()
    sweep = Path(args.sweep)
    splits, meta = load_dataset(args.data)
    results = json.loads((sweep / "results.json").read_text())
    rows = []
    for row in results:
        if row.get("status") != "finished":
            continue
        r = candidate_row(sweep / "candidates" / row["candidate_id"], row, splits,
                          meta.class_names, args.perm)  # fmt: skip
        if r is not None:
            rows.append(r)
            print(f"{r['candidate_id']}: n {int(r['n'])} nmi {r['nmi']:.3f} p {r['p_value']:.4f}")
    summary = summarise(rows)
    (sweep / "attribution.json").write_text(json.dumps({"summary": summary, "rows": rows},
                                                       indent=2))  # fmt: skip
    md = render(summary, rows, meta.class_names)
    (sweep / "attribution.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
