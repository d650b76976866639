"""How far to trust a recall estimated from synthetic defects: the gap to real defects.

    python benchmarks/synthetic_gap.py --datasets surfaces,brick --out runs/bench-synthetic

On each data set (the peer benchmark's splits, benchmarks/inspection.py) every candidate
(the peers and every granvae score rule of one trained model) is scored on the val good
images (the 1% false-alarm threshold), on the test split's real defects, and on synthetic
defects (granvae.data.synthetic_defects) drawn onto the test split's *good* images, which
no method has seen. granvae.synthetic_choice then gives, per candidate, the recall
estimated from synthetic defects (mean over the five classes) beside the recall on real
defects; and it picks a candidate from synthetic defects alone, whose real recall is set
against the best real recall any candidate reached. Writes results.json and table.md.
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
from granvae.data.synthetic_defects import (  # noqa: E402
    SYNTHETIC_CLASSES,
    SyntheticParams,
    synthetic_set,
)
from granvae.models import FactorizedVAE  # noqa: E402
from granvae.objectives import make_groups  # noqa: E402
from granvae.peers import PEERS  # noqa: E402
from granvae.scoring import InspectionHead, fit_head, score_all_rules  # noqa: E402
from granvae.scoring.features import fit_feature_bank  # noqa: E402
from granvae.synthetic_choice import CandidateScores, choose_rule  # noqa: E402
from pipelines.cli import parse_sets  # noqa: E402


def trained_head(splits: dict, settings, args, out: Path) -> InspectionHead:
    """The benchmark's granvae model; with --reuse the one a previous run left under --out."""
    model_dir = out / f"seed{args.seed}" / "model"
    if not (args.reuse and model_dir.is_dir()):
        return bench.train_vae(splits, settings, args.seed, out)[0]
    model = FactorizedVAE.load(model_dir).eval()
    groups = make_groups(model.config.latent_dim, settings.objective.granularity)
    head = InspectionHead(model, groups, score="neg_elbo")
    fit_head(head, splits["train"].images)
    if model.config.arch == "conv":  # feat_knn's bank, as bench.train_vae fits it
        fit_feature_bank(head, splits["train"].images, np.random.default_rng(args.seed))
    return head


def candidates_for(name: str, args, settings, out: Path) -> dict[str, CandidateScores]:
    splits, _ = bench.load(name, args)
    test = splits["test"]
    good_test = test.images[test.labels == 0]
    rng = np.random.default_rng(args.seed)
    side = good_test.shape[-1]
    params = SyntheticParams(size_frac=(args.size_min, args.size_max)) if side else None
    synth, masks, kinds = synthetic_set(good_test, rng, params=params)
    keep = masks.any(axis=(1, 2))
    synth, kinds = synth[keep], kinds[keep]
    real = test.images[test.labels > 0]
    out_c: dict[str, CandidateScores] = {}

    def add(method: str, val: np.ndarray, syn: np.ndarray, real_s: np.ndarray) -> None:
        out_c[method] = CandidateScores(
            good=val, synthetic={k: syn[kinds == k] for k in SYNTHETIC_CLASSES}, real=real_s
        )

    for peer_name in PEERS:
        peer = PEERS[peer_name]()
        peer.fit(splits["train"].images)
        add(peer_name, peer.score(splits["val"].images).scores, peer.score(synth).scores,
            peer.score(real).scores)  # fmt: skip
    head = trained_head(splits, settings, args, out / name)
    val, syn, rl = (score_all_rules(head, x) for x in (splits["val"].images, synth, real))
    for rule in val:
        add(f"granvae:{rule}", val[rule], syn[rule], rl[rule])
    return out_c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="surfaces,brick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--n-val", type=int, default=256)
    ap.add_argument("--n-test", type=int, default=256)
    ap.add_argument("--size-min", type=float, default=0.08, help="defect extent / image side")
    ap.add_argument("--size-max", type=float, default=0.25)
    ap.add_argument("--set", action="append", default=[], help="params override key=value")
    ap.add_argument("--out", default="runs/bench-synthetic")
    ap.add_argument("--reuse", action="store_true", help="score the models already under --out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = load_settings(ROOT / "params.yaml", parse_sets(args.set))
    results, lines = [], [
        "| data | candidate | synthetic recall | real recall | gap | "
        + " | ".join(SYNTHETIC_CLASSES) + " |",
        "|---|---|---|---|---|" + "---|" * len(SYNTHETIC_CLASSES),
    ]  # fmt: skip
    for name in [d for d in args.datasets.split(",") if d]:
        choice = choose_rule(candidates_for(name, args, settings, out), bench.FAR)
        best_real = max(e.real_recall or 0.0 for e in choice.estimates)
        for e in choice.estimates:
            mark = " (chosen)" if e.name == choice.best else ""
            results.append({"dataset": name, "candidate": e.name, "chosen": e.name == choice.best,
                            "synthetic_recall": e.synthetic_recall, "real_recall": e.real_recall,
                            "gap": e.gap, "per_class": e.per_class,
                            "synthetic_auroc": e.synthetic_auroc})  # fmt: skip
            per = " | ".join(f"{e.per_class.get(k, float('nan')):.2f}" for k in SYNTHETIC_CLASSES)
            lines.append(f"| {name} | {e.name}{mark} | {e.synthetic_recall:.3f} | "
                         f"{e.real_recall:.3f} | {e.gap:+.3f} | {per} |")  # fmt: skip
        chosen = choice.estimate(choice.best)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        (out / "table.md").write_text("\n".join(lines) + "\n")
        bench.console.log(
            f"{name}: chose {choice.best} (synthetic {chosen.synthetic_recall:.3f}, "
            f"real {chosen.real_recall:.3f}; best real {best_real:.3f})"
        )
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
