"""Texture-scale tiles and tile-density scores against the peers, with an ablation.

One run, per data set: the peers (pixel_gaussian, pca_residual, patch_nn) and granvae
models trained on ``--tiles`` px tiles of the 64-px images (stride ``--stride``), 3 seeds,
the same splits, threshold rule and bootstrap as benchmarks/inspection.py. For each tiled
model every combination of the three tile-density parts (granvae.scoring.density:
tile_elbo, tile_knn, res_max) is scored from one pass, plus the smoothed ``l2_max`` on the
same tiles: the ablation (each part on and off, smoothing on and off) costs no training.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/textures.py --tiles 16 --stride 4
    python benchmarks/textures.py --datasets brick --seeds 0 --epochs 5   # a quick look

Writes results.json and table.md under --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from inspection import (  # noqa: E402
    PEERS,
    Scored,
    console,
    load,
    pixel_metrics,
    recall_with_interval,
    render,
    run_peer,
)

from granvae.config import load_settings  # noqa: E402
from granvae.data.textures import TEXTURES  # noqa: E402
from granvae.models import FactorizedVAE  # noqa: E402
from granvae.objectives import make_groups  # noqa: E402
from granvae.scoring import build_head, maps  # noqa: E402
from granvae.scoring.density import PARTS, raw_parts  # noqa: E402
from granvae.scoring.head import _Pass, batches_nhwc  # noqa: E402
from granvae.scoring.tiling import TilingConfig, extract_tiles, stitch  # noqa: E402
from granvae.train import train  # noqa: E402
from pipelines.cli import parse_sets  # noqa: E402

SHORT = {"tile_elbo": "E", "tile_knn": "K", "res_max": "R"}
# every non-empty subset of the parts, named by the rule it equals where there is one
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(range(len(PARTS)), r)]


def subset_name(subset: tuple[int, ...]) -> str:
    if len(subset) == len(PARTS):
        return "tile_fusion"
    if len(subset) == 1:
        return PARTS[subset[0]]
    return "+".join(SHORT[PARTS[i]] for i in subset)


@torch.no_grad()
def score_subsets(head, images: np.ndarray, batch: int = 2048) -> dict[str, dict]:
    """{rule: {"scores": (N,), "maps": (N, H, W)}} for every part subset and smoothed l2_max,
    from one pass over each image's tiles."""
    tiling = head.tiling
    n, c, h, w = images.shape
    mean, std = head.density_mean.numpy(), head.density_std.numpy()
    kernel = head.smooth_kernel
    names = [subset_name(s) for s in SUBSETS] + ["l2_max_tiles"]
    out = {k: {"scores": [], "maps": []} for k in names}
    per_chunk = max(1, batch // len(tiling.grid(h, w)))
    for start in range(0, n, per_chunk):
        tiles = extract_tiles(images[start : start + per_chunk], tiling)
        m, t_count = tiles.shape[:2]
        flat = tiles.reshape(m * t_count, c, tiling.tile, tiling.tile)
        parts_acc: list[list[torch.Tensor]] = [[], [], []]
        for b in batches_nhwc(flat, batch, "cpu"):
            for acc, part in zip(parts_acc, raw_parts(_Pass(head, b)), strict=True):
                acc.append(part)
        raw = [torch.cat(a) for a in parts_acc]
        l2 = raw[2].reshape(m, t_count, tiling.tile, tiling.tile)
        z = [((raw[i] - float(mean[i])) / float(std[i])) for i in range(len(PARTS))]
        z = [(v[:, None, None].expand_as(raw[2]) if v.dim() == 1 else v) for v in z]
        z = [v.reshape(m, t_count, tiling.tile, tiling.tile) for v in z]
        for s in SUBSETS:
            stitched = stitch(sum(z[i] for i in s), tiling, h, w)
            out[subset_name(s)]["scores"].append(maps.max_value(stitched).numpy())
            out[subset_name(s)]["maps"].append(stitched.numpy())
        smoothed = maps.smooth_map(stitch(l2, tiling, h, w), kernel)
        out["l2_max_tiles"]["scores"].append(maps.max_value(smoothed).numpy())
        out["l2_max_tiles"]["maps"].append(smoothed.numpy())
    return {k: {f: np.concatenate(v[f]) for f in v} for k, v in out.items()}


def run_tiled(splits: dict, settings, args, out: Path) -> dict[str, dict]:
    tiling_cfg = TilingConfig(tile=args.tiles, stride=args.stride,
                              tiles_per_image=args.tiles_per_image)  # fmt: skip
    per_rule: dict[str, dict] = {}
    for seed in args.seeds:
        cfg = settings.train.model_copy(update={"seed": seed, "epochs": args.epochs})
        model_cfg = settings.model.model_copy(
            update={"image_size": args.tiles, "in_channels": splits["train"].images.shape[1]}
        )
        t0 = time.perf_counter()
        result = train(
            splits["train"].images, model_cfg, settings.objective, cfg, out / f"seed{seed}",
            resume=False, progress=False, val_images=splits["val"].images, tiling=tiling_cfg,
        )  # fmt: skip
        model = FactorizedVAE.load(result.model_dir).eval()
        groups = make_groups(model.config.latent_dim, settings.objective.granularity)
        head = build_head(model, groups, "tile_fusion", splits["train"].images,
                          settings.evaluation.smooth_sigma, tiling=tiling_cfg.geometry())
        train_s = time.perf_counter() - t0
        val = score_subsets(head, splits["val"].images)
        t0 = time.perf_counter()
        test = score_subsets(head, splits["test"].images)
        ms = 1000 * (time.perf_counter() - t0) / len(splits["test"])
        for rule in test:
            e = per_rule.setdefault(rule, {"val": [], "test": [], "train_s": [], "maps": None})
            e["val"].append(val[rule]["scores"])
            e["test"].append(test[rule]["scores"])
            e["train_s"].append(train_s)
            e["ms"] = ms
            if seed == args.seeds[0]:
                e["maps"] = test[rule]["maps"]
        console.log(f"seed {seed}: {result.epochs_completed} epochs, {train_s:.0f} s")
    return per_rule


def bench(name: str, args, settings, out: Path) -> list[dict]:
    splits, _ = load(name, args)
    labels, masks = splits["test"].labels, splits["test"].masks
    rng = np.random.default_rng(0)
    rows = []
    for peer in PEERS:
        scored, fit_s, ms = run_peer(peer, splits)
        row = {"dataset": name, "method": peer, "train_s": fit_s, "ms_per_image": ms}
        row.update(recall_with_interval(scored, labels, rng))
        row.update(pixel_metrics(scored.maps, masks))
        rows.append(row)
        console.log(f"{name} {peer}: recall {row['recall']:.3f} auroc {row['image_auroc']:.3f}")
    for rule, e in run_tiled(splits, settings, args, out / name).items():
        row = {"dataset": name, "method": f"granvae[{args.tiles}/{args.stride}]:{rule}",
               "train_s": float(np.mean(e["train_s"])), "ms_per_image": e["ms"],
               "seeds": len(args.seeds)}  # fmt: skip
        row.update(recall_with_interval(Scored(e["val"], e["test"], e["maps"]), labels, rng))
        row.update(pixel_metrics(e["maps"], masks))
        rows.append(row)
        console.log(f"{name} {rule}: recall {row['recall']:.3f} auroc {row['image_auroc']:.3f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="surfaces," + ",".join(TEXTURES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--n-val", type=int, default=256)
    ap.add_argument("--n-test", type=int, default=256)
    ap.add_argument("--tiles", type=int, default=16)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--tiles-per-image", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--set", action="append", default=[], help="params override key=value")
    ap.add_argument("--out", default="runs/bench-textures")
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    settings = load_settings(ROOT / "params.yaml", parse_sets(args.set))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name in [d for d in args.datasets.split(",") if d]:
        rows += bench(name, args, settings, out)
        (out / "results.json").write_text(json.dumps(rows, indent=2))
    md = render(rows, "tile_fusion")
    (out / "table.md").write_text(md + "\n")
    print(md)
    print(f"\nargs: {vars(args)}\nsettings: model={settings.model.model_dump()} "
          f"objective={settings.objective.model_dump()}")  # fmt: skip


if __name__ == "__main__":
    main()
