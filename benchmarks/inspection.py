"""Peer benchmark: granvae's score rules against what an engineer would try first.

One run, the same splits and the same threshold rule (1% false alarms, order statistic on
held-out good images) for every method, on generated parts and on real photographs:

    python benchmarks/inspection.py                      # surfaces, brick, grass, gravel
    python benchmarks/inspection.py --mvtec /data/mvtec/bottle --datasets surfaces
    python benchmarks/inspection.py --datasets '' --highres 512   # tiles vs resize-to-64

Per data set and method: image AUROC, recall at 1% false alarms with a bootstrap 95%
interval (good and defect images resampled, threshold recalibrated), observed false-alarm
rate on test, pixel AUROC, AUPRO (to 30% FPR), train seconds and scoring ms per image.
granvae is trained with several seeds (params.yaml defaults plus --set overrides); its
interval is the bootstrap over images of the seed-averaged recall, and its seed range is
shown beside it. Writes results.json and table.md under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from granvae.config import load_settings  # noqa: E402
from granvae.data.folder import load_mvtec  # noqa: E402
from granvae.data.generate import generate  # noqa: E402
from granvae.data.textures import TEXTURES, make_texture  # noqa: E402
from granvae.metrics.aupro import aupro  # noqa: E402
from granvae.metrics.bootstrap import (  # noqa: E402
    percentile_interval,
    replicate_recalls,
    resample_indices,
)
from granvae.metrics.inspection import image_auroc, pixel_auroc  # noqa: E402
from granvae.metrics.thresholds import calibrate_threshold  # noqa: E402
from granvae.models import FactorizedVAE  # noqa: E402
from granvae.objectives import make_groups  # noqa: E402
from granvae.peers import PEERS  # noqa: E402
from granvae.scoring import InspectionHead, fit_head, score_all_rules, score_images  # noqa: E402
from granvae.scoring.features import fit_feature_bank  # noqa: E402
from granvae.train import train  # noqa: E402
from pipelines.cli import parse_sets  # noqa: E402

console = Console()
FAR = 0.01
N_BOOT = 1000


def load(name: str, args) -> tuple[dict, tuple[str, ...]]:
    if name == "surfaces":
        splits, meta = generate("surfaces", args.n_train, args.n_val, args.n_test, seed=0)
    elif name in TEXTURES:
        splits, meta = make_texture(name, args.n_train, args.n_val, args.n_test, seed=0)
    else:
        splits, meta = load_mvtec(name, image_size=64, channels=1)
    return splits, meta.class_names


class Scored:
    """val/test scores of one method (one or several seeds) and what the tables need."""

    def __init__(self, val: list[np.ndarray], test: list[np.ndarray], maps: np.ndarray | None):
        self.val, self.test, self.maps = val, test, maps


def recall_with_interval(scored: Scored, labels: np.ndarray, rng) -> dict[str, float]:
    """Seed-averaged recall and its bootstrap interval (same resamples for every seed)."""
    defect = labels > 0
    per_seed = [
        float(np.mean(t[defect] > calibrate_threshold(v, FAR).value))
        for v, t in zip(scored.val, scored.test, strict=True)
    ]
    gi, di = resample_indices(rng, N_BOOT, len(scored.val[0]), int(defect.sum()))
    reps = np.mean(
        [replicate_recalls(v, t[defect], gi, di, FAR)
         for v, t in zip(scored.val, scored.test, strict=True)],
        axis=0,
    )  # fmt: skip
    lo, hi = percentile_interval(reps)
    far = [
        float(np.mean(t[~defect] > calibrate_threshold(v, FAR).value))
        for v, t in zip(scored.val, scored.test, strict=True)
    ]
    return {
        "recall": float(np.mean(per_seed)), "recall_lo": lo, "recall_hi": hi,
        "recall_seed_min": min(per_seed), "recall_seed_max": max(per_seed),
        "observed_far": float(np.mean(far)),
        "image_auroc": float(np.mean([image_auroc(t, labels) for t in scored.test])),
    }  # fmt: skip


def pixel_metrics(maps: np.ndarray | None, masks: np.ndarray) -> dict[str, float]:
    if maps is None or not masks.any():
        return {"pixel_auroc": float("nan"), "aupro": float("nan")}
    return {"pixel_auroc": pixel_auroc(maps, masks), "aupro": aupro(maps, masks)}


def run_peer(name: str, splits: dict) -> tuple[Scored, float, float]:
    peer = PEERS[name]()
    t0 = time.perf_counter()
    peer.fit(splits["train"].images)
    fit_s = time.perf_counter() - t0
    val = peer.score(splits["val"].images)
    t0 = time.perf_counter()
    test = peer.score(splits["test"].images)
    ms = 1000 * (time.perf_counter() - t0) / len(splits["test"])
    return Scored([val.scores], [test.scores], test.maps), fit_s, ms


def train_vae(splits: dict, settings, seed: int, out: Path):
    cfg = settings.train.model_copy(update={"seed": seed})
    model_cfg = settings.model.model_copy(
        update={"image_size": splits["train"].images.shape[-1],
                "in_channels": splits["train"].images.shape[1]}
    )  # fmt: skip
    result = train(
        splits["train"].images, model_cfg, settings.objective, cfg, out / f"seed{seed}",
        resume=False, progress=False, val_images=splits["val"].images,
    )  # fmt: skip
    model = FactorizedVAE.load(result.model_dir).eval()
    groups = make_groups(model.config.latent_dim, settings.objective.granularity)
    head = InspectionHead(model, groups, score="neg_elbo")
    fit_head(head, splits["train"].images)
    if model.config.arch == "conv":  # feat_knn's bank: one more row per data set
        fit_feature_bank(head, splits["train"].images, np.random.default_rng(seed))
    return head, result


def run_granvae(splits: dict, settings, seeds: list[int], out: Path) -> dict[str, dict]:
    """{rule: {"scored", "train_s", "ms", "diagnostics"}} over seeds."""
    per_rule: dict[str, dict] = {}
    for seed in seeds:
        head, result = train_vae(splits, settings, seed, out)
        val = score_all_rules(head, splits["val"].images)
        t0 = time.perf_counter()
        test = score_all_rules(head, splits["test"].images)
        ms = 1000 * (time.perf_counter() - t0) / len(splits["test"])
        for rule in test:
            entry = per_rule.setdefault(rule, {"val": [], "test": [], "train_s": [], "maps": None})
            entry["val"].append(val[rule])
            entry["test"].append(test[rule])
            entry["train_s"].append(result.seconds)
            entry["ms"] = ms
            if seed == seeds[0]:
                head.score_kind = rule
                entry["maps"] = score_images(head, splits["test"].images)["anomaly_map"]
        per_rule["_diag"] = {"epochs": result.epochs_completed, "best_epoch": result.best_epoch}
    return per_rule


def bench_dataset(name: str, args, settings, out: Path) -> list[dict]:
    splits, _ = load(name, args)
    labels, masks = splits["test"].labels, splits["test"].masks
    rng = np.random.default_rng(0)
    rows = []
    for peer in PEERS:
        scored, fit_s, ms = run_peer(peer, splits)
        row = {"dataset": Path(name).name, "method": peer, "train_s": fit_s, "ms_per_image": ms}
        row.update(recall_with_interval(scored, labels, rng))
        row.update(pixel_metrics(scored.maps, masks))
        rows.append(row)
        console.log(f"{name} {peer}: recall {row['recall']:.3f} auroc {row['image_auroc']:.3f}")
    per_rule = run_granvae(splits, settings, args.seeds, out / Path(name).name)
    diag = per_rule.pop("_diag")
    for rule, entry in per_rule.items():
        scored = Scored(entry["val"], entry["test"], entry["maps"])
        row = {"dataset": Path(name).name, "method": f"granvae:{rule}",
               "train_s": float(np.mean(entry["train_s"])), "ms_per_image": entry["ms"],
               "seeds": len(args.seeds), **diag}  # fmt: skip
        row.update(recall_with_interval(scored, labels, rng))
        row.update(pixel_metrics(scored.maps, masks))
        rows.append(row)
    return rows


def budget_curve(args, settings, out: Path, checkpoints=(2, 5, 10, 20, 40)) -> list[dict]:
    """Recall of the default rule vs training minutes on surfaces (seed 0): how much CPU a
    user must spend for what quality. Evaluated from the checkpoint each epoch leaves."""
    import torch

    splits, _ = load("surfaces", args)
    rows: list[dict] = []
    t0 = time.perf_counter()
    run_dir = out / "budget"
    cfg = settings.train.model_copy(
        update={"epochs": max(checkpoints), "early_stop_patience": None}
    )
    model_cfg = settings.model.model_copy(update={"image_size": 64, "in_channels": 1})

    def on_epoch(epoch: int, _terms: dict) -> None:
        if epoch not in checkpoints:
            return
        minutes = (time.perf_counter() - t0) / 60
        model = FactorizedVAE(model_cfg)
        model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"])
        groups = make_groups(model_cfg.latent_dim, settings.objective.granularity)
        head = InspectionHead(model.eval(), groups, "neg_elbo")
        fit_head(head, splits["train"].images)
        rule = settings.evaluation.score
        val = score_all_rules(head, splits["val"].images)[rule]
        test = score_all_rules(head, splits["test"].images)[rule]
        r = recall_with_interval(Scored([val], [test], None), splits["test"].labels,
                                 np.random.default_rng(0))  # fmt: skip
        rows.append({"epoch": epoch, "train_minutes": minutes, **r})
        console.log(f"budget: epoch {epoch} {minutes:.2f} min recall {r['recall']:.3f}")

    train(splits["train"].images, model_cfg, settings.objective, cfg, run_dir, resume=False,
          progress=False, on_epoch=on_epoch)  # fmt: skip
    return rows


def diagnose(args, out: Path) -> str:
    """Is each trained model using its latents? Active units, KL per image, sharpness of its
    reconstructions (granvae.evaluate.collapse_diagnostics) on the good test images."""
    from granvae.evaluate import collapse_diagnostics

    lines = ["| data | seed | epochs run (best) | active units | KL nats/image | max KL/dim | "
             "recon sharpness |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for run in sorted(out.glob("*/seed*/model")):
        name, seed = run.parents[1].name, run.parent.name
        splits, _ = load(name, args)
        good = splits["test"].images[splits["test"].labels == 0]
        d = collapse_diagnostics(FactorizedVAE.load(run).eval(), good)
        status = json.loads((run.parent / "status.json").read_text())
        lines.append(
            f"| {name} | {seed[4:]} | {status['epochs_completed']} ({status.get('best_epoch')}) | "
            f"{d['active_units']:.0f} | {d['kl_per_image']:.1f} | {d['kl_max_dim']:.2f} | "
            f"{d['recon_sharpness']:.2f} |"
        )
    return "\n".join(lines)


def render(rows: list[dict], default_rule: str) -> str:
    head = ("| data | method | image AUROC | recall @1% FA [95% CI] | seed range | obs. FA | "
            "pixel AUROC | AUPRO | train s | ms/img |")  # fmt: skip
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        name = r["method"] + (" (default)" if r["method"] == f"granvae:{default_rule}" else "")
        seeds = (f"{r['recall_seed_min']:.3f}-{r['recall_seed_max']:.3f}"
                 if r.get("seeds", 1) > 1 else "-")  # fmt: skip
        lines.append(
            f"| {r['dataset']} | {name} | {r['image_auroc']:.3f} | {r['recall']:.3f} "
            f"[{r['recall_lo']:.3f}, {r['recall_hi']:.3f}] | {seeds} | {r['observed_far']:.3f} | "
            f"{r['pixel_auroc']:.3f} | {r['aupro']:.3f} | {r['train_s']:.1f} | "
            f"{r['ms_per_image']:.2f} |"
        )
    return "\n".join(lines)


def show(rows: list[dict]) -> None:
    table = Table("data", "method", "AUROC", "recall [95% CI]", "obs FA", "pixAUROC", "AUPRO",
                  "train s", "ms/img")  # fmt: skip
    for r in rows:
        table.add_row(r["dataset"], r["method"], f"{r['image_auroc']:.3f}",
                      f"{r['recall']:.3f} [{r['recall_lo']:.2f}, {r['recall_hi']:.2f}]",
                      f"{r['observed_far']:.3f}", f"{r['pixel_auroc']:.3f}", f"{r['aupro']:.3f}",
                      f"{r['train_s']:.1f}", f"{r['ms_per_image']:.2f}")  # fmt: skip
    console.print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="surfaces," + ",".join(TEXTURES))
    ap.add_argument("--mvtec", action="append", default=[], help="MVTec-style category root")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--n-val", type=int, default=256)
    ap.add_argument("--n-test", type=int, default=256)
    ap.add_argument("--set", action="append", default=[], help="params override key=value")
    ap.add_argument("--out", default="runs/bench-inspection")
    ap.add_argument("--budget", action="store_true", help="also: recall vs training minutes")
    ap.add_argument("--highres", type=int, default=0,
                    help="also: surfaces at this many px, tiles vs resize-to-64")
    ap.add_argument("--highres-frame", choices=("part", "surface"), default="part",
                    help="whole part on its fixture, or the middle of its surface")
    ap.add_argument("--defect-px", type=float, default=12.0,
                    help="defect size at severity 1 for --highres parts")  # fmt: skip
    ap.add_argument("--diagnose-only", action="store_true",
                    help="only print diagnostics of the models already under --out")  # fmt: skip
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    settings = load_settings(ROOT / "params.yaml", parse_sets(args.set))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.diagnose_only:
        print(diagnose(args, out))
        return
    rows = []
    for name in [d for d in args.datasets.split(",") if d] + args.mvtec:
        rows += bench_dataset(name, args, settings, out)
        (out / "results.json").write_text(json.dumps(rows, indent=2))
    if args.highres:
        import highres

        rows += highres.bench_highres(args, settings, out / "highres", sys.modules[__name__])
        (out / "results.json").write_text(json.dumps(rows, indent=2))
    show(rows)
    md = render(rows, settings.evaluation.score)
    if args.budget:
        curve = budget_curve(args, settings, out)
        (out / "budget.json").write_text(json.dumps(curve, indent=2))
        md += "\n\n| epochs | train minutes | recall @1% FA [95% CI] | image AUROC |"
        md += "\n|---|---|---|---|"
        for r in curve:
            md += (f"\n| {r['epoch']} | {r['train_minutes']:.2f} | {r['recall']:.3f} "
                   f"[{r['recall_lo']:.3f}, {r['recall_hi']:.3f}] | {r['image_auroc']:.3f} |")
    md += "\n\n" + diagnose(args, out)
    (out / "table.md").write_text(md + "\n")
    print(md)
    print(f"\nsettings: model={settings.model.model_dump()} train={settings.train.model_dump()} "
          f"objective={settings.objective.model_dump()}")  # fmt: skip


if __name__ == "__main__":
    main()
