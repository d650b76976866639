"""Position-aware scoring on a part in its fixture: one tile model, the map read four ways.

    python benchmarks/fixture_position.py --frame part --seed 0 --out runs/bench-position

The 512-px part on its fixture (benchmarks/highres.py's data: ``surfaces`` at 512 px, 12-px
defects, the part shifted by up to 32 px with the outline in view), a tile model (tile 64,
stride 32, params.yaml defaults otherwise) trained on the good training parts; the stitched
full-size maps of train / val / test parts are saved (maps.npz), then read as:

    tiles                            the map's maximum (today's rule)
    tiles+position                   z = (map - mean) / spread per pixel, statistics of
                                     POSITION_FIT good training parts on a reference frame
                                     every part is registered to; dilated by 2 px; max z
    ... (no registration)            the same statistics on the raw pixel grid
    ... (no dilation)                registered, not dilated

Threshold at 1% false alarms on the val good parts, recall and AUROC on test, pixel AUROC of
the maps against the defect masks. ``--reuse`` reads an existing maps.npz under --out and
only re-scores (the statistics variants cost seconds; training costs minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from highres import POSITION_VARIANTS, framed  # noqa: E402

from granvae.config import load_settings  # noqa: E402
from granvae.data.generate import generate  # noqa: E402
from granvae.metrics.inspection import image_auroc, pixel_auroc  # noqa: E402
from granvae.metrics.thresholds import calibrate_threshold  # noqa: E402
from granvae.models import FactorizedVAE  # noqa: E402
from granvae.objectives import make_groups  # noqa: E402
from granvae.scoring import build_head, position, registration, score_images  # noqa: E402
from granvae.train import train  # noqa: E402
from pipelines.cli import parse_sets  # noqa: E402

FAR = 0.01
POSITION_FIT = 128


def make_maps(args, out: Path) -> dict[str, np.ndarray]:
    """Train the tile model and save every split's images, labels, masks and maps."""
    settings = load_settings(ROOT / "params.yaml", parse_sets(args.set))
    if args.frame == "surface":
        full = framed(args.n_train, args.n_val, args.n_test, args.size, args.defect_px)
    else:
        full, _ = generate("surfaces", args.n_train, args.n_val, args.n_test, seed=0,
                           image_size=args.size, defect_px=args.defect_px)  # fmt: skip
    tiling = settings.tiling
    images = full["train"].images
    model_cfg = settings.model.model_copy(update={"image_size": tiling.tile, "in_channels": 1})
    cfg = settings.train.model_copy(update={"seed": args.seed})
    result = train(images, model_cfg, settings.objective, cfg, out / "model", resume=False,
                   progress=False, val_images=full["val"].images, tiling=tiling)  # fmt: skip
    model = FactorizedVAE.load(result.model_dir).eval()
    groups = make_groups(model_cfg.latent_dim, settings.objective.granularity)
    head = build_head(model, groups, settings.evaluation.score, images,
                      settings.evaluation.smooth_sigma, settings.evaluation.topk_frac,
                      tiling=tiling.geometry())  # fmt: skip
    dump: dict[str, np.ndarray] = {}
    for name in ("train", "val", "test"):
        split = full[name]
        keep = slice(0, POSITION_FIT) if name == "train" else slice(None)
        r = score_images(head, split.images[keep])
        dump.update({f"{name}_maps": r["anomaly_map"].astype(np.float16),
                     f"{name}_images": split.images[keep], f"{name}_labels": split.labels[keep],
                     f"{name}_masks": split.masks[keep]})  # fmt: skip
    np.savez(out / "maps.npz", **dump)
    return dump


def evaluate(d: dict[str, np.ndarray]) -> list[dict]:
    labels, masks = d["test_labels"], d["test_masks"]
    fit_images = d["train_images"][:POSITION_FIT]
    fit_maps = d["train_maps"][:POSITION_FIT].astype(np.float32)
    val_maps, test_maps = d["val_maps"].astype(np.float32), d["test_maps"].astype(np.float32)
    reference = registration.gray(fit_images[0])
    t0 = time.perf_counter()
    motions = {"train": position.motions(reference, fit_images)}
    motions.update({k: position.motions(reference, d[f"{k}_images"]) for k in ("val", "test")})
    reg_ms = 1000 * (time.perf_counter() - t0) / sum(len(m) for m in motions.values())
    scored = {"tiles": (val_maps.reshape(len(val_maps), -1).max(1),
                        test_maps.reshape(len(test_maps), -1).max(1), test_maps)}  # fmt: skip
    for name, kw in POSITION_VARIANTS.items():
        stats = position.fit(fit_images, fit_maps, rigids=motions["train"], **kw)
        v, _ = position.apply(stats, d["val_images"], val_maps, motions["val"])
        t, z = position.apply(stats, d["test_images"], test_maps, motions["test"])
        scored[name] = (v, t, z)
    rows = []
    for name, (v, t, maps) in scored.items():
        thr = calibrate_threshold(v, FAR).value
        rows.append({
            "method": f"granvae:{name}", "image_auroc": image_auroc(t, labels),
            "recall": float(np.mean(t[labels > 0] > thr)),
            "observed_far": float(np.mean(t[labels == 0] > thr)),
            "pixel_auroc": pixel_auroc(maps, masks),
            "registration_ms": reg_ms if POSITION_VARIANTS.get(name, {}).get("register") else 0.0,
        })  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frame", choices=("part", "surface"), default="part")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--defect-px", type=float, default=12.0)
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--n-val", type=int, default=128)
    ap.add_argument("--n-test", type=int, default=128)
    ap.add_argument("--set", action="append",
                    default=["tiling.tile=64", "tiling.stride=32"])  # fmt: skip
    ap.add_argument("--out", default="runs/bench-position")
    ap.add_argument("--reuse", action="store_true", help="score an existing maps.npz")
    args = ap.parse_args()
    out = Path(args.out) / f"{args.frame}-s{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    if args.reuse:
        with np.load(out / "maps.npz") as f:
            dump = {k: f[k] for k in f.files}
    else:
        dump = make_maps(args, out)
    rows = evaluate(dump)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print("| method | image AUROC | recall @1% FA | obs. FA | pixel AUROC | reg. ms/part |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['image_auroc']:.3f} | {r['recall']:.3f} | "
            f"{r['observed_far']:.3f} | {r['pixel_auroc']:.3f} | {r['registration_ms']:.0f} |"
        )


if __name__ == "__main__":
    main()
