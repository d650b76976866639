"""What tiles buy: small defects on high-resolution parts, tiles vs the part resized to 64 px.

`python benchmarks/inspection.py --highres 512 --datasets ''` runs it (rows join the peer
table); this module holds the comparison so the peer benchmark stays one job per file.

The same generated parts (surfaces at --highres px, defects of --defect-px px at severity
1; `--highres-frame part` shows the whole part on its fixture, `surface` only the middle of
its surface, as a camera framing the surface would) are scored four ways on the same
splits, with the same 1% false-alarm threshold rule:

    granvae:tiles      a model trained on random 64-px tiles; scoring stitches a tile grid
    granvae:tiles+position  the same tile model's stitched map standardised per pixel by
                       good parts' mean and spread on a reference frame each part is
                       registered to (granvae.scoring.position); and its ablations
    granvae:resize64   a whole-image model on the parts resized to 64 px (the old import),
                       trained for the same number of optimiser steps
    <peer>@64          the peers on the resized parts
    pixel_gaussian     the per-pixel Gaussian peer at full resolution (cheap at any size)

Pixel metrics are at full resolution: resized-path maps are upsampled (bilinear) first.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from granvae.data.generate import generate
from granvae.models import FactorizedVAE
from granvae.objectives import make_groups
from granvae.peers import PEERS
from granvae.scoring import build_head, position, registration, score_images
from granvae.scoring.tiling import TilingConfig
from granvae.train import train

SMALL = 64


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """What `granvae data import --image-size 64` does (Pillow bilinear), NCHW uint8."""
    return np.stack([
        np.stack([np.asarray(Image.fromarray(ch).resize((size, size), Image.Resampling.BILINEAR))
                  for ch in img])
        for img in images
    ])  # fmt: skip


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(maps, np.float32))[:, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()


def _train_and_score(splits, settings, seed, out, tiling: TilingConfig | None, epochs: int):
    images = splits["train"].images
    side = tiling.tile if tiling else images.shape[-1]
    model_cfg = settings.model.model_copy(update={"image_size": side, "in_channels": 1})
    cfg = settings.train.model_copy(update={"seed": seed, "epochs": epochs})
    t0 = time.perf_counter()
    result = train(images, model_cfg, settings.objective, cfg, out, resume=False, progress=False,
                   val_images=splits["val"].images, tiling=tiling)  # fmt: skip
    train_s = time.perf_counter() - t0
    model = FactorizedVAE.load(result.model_dir).eval()
    groups = make_groups(model_cfg.latent_dim, settings.objective.granularity)
    geometry = tiling.geometry() if tiling else None
    head = build_head(model, groups, settings.evaluation.score, images,
                      settings.evaluation.smooth_sigma, settings.evaluation.topk_frac,
                      tiling=geometry)  # fmt: skip
    val = score_images(head, splits["val"].images)
    t0 = time.perf_counter()
    test = score_images(head, splits["test"].images)
    ms = 1000 * (time.perf_counter() - t0) / len(splits["test"])
    steps = result.epochs_completed * (len(images) * (tiling.tiles_per_image if tiling else 1)
                                       // cfg.batch_size)  # fmt: skip
    if tiling is not None:  # the position-aware path reads the full-size maps
        fit_maps = score_images(head, images[:POSITION_FIT])["anomaly_map"]
        test["position"] = position_rows(images[:POSITION_FIT], fit_maps, splits, val, test)
    return val["score"], test, train_s, ms, steps


POSITION_FIT = 128  # good training parts whose maps give the per-pixel statistics
# name -> position.fit settings; the first is the default, the others its ablations
POSITION_VARIANTS = {
    "tiles+position": {"register": True, "dilate": 2},
    "tiles+position (no registration)": {"register": False, "dilate": 2},
    "tiles+position (no dilation)": {"register": True, "dilate": 0},
}


def position_rows(fit_images, fit_maps, splits, val: dict, test: dict) -> dict[str, tuple]:
    """{variant: (val scores, test scores, test z-maps, ms per part)}: the stitched maps
    standardised per pixel by good parts' statistics (granvae.scoring.position), each
    part's motion onto the reference estimated once and shared by the variants."""
    reference = registration.gray(fit_images[0])
    t0 = time.perf_counter()
    motions = {name: position.motions(reference, x) for name, x in
               (("fit", fit_images), ("val", splits["val"].images),
                ("test", splits["test"].images))}  # fmt: skip
    reg_ms = 1000 * (time.perf_counter() - t0) / sum(len(m) for m in motions.values())
    out = {}
    for name, kw in POSITION_VARIANTS.items():
        stats = position.fit(fit_images, fit_maps, rigids=motions["fit"], **kw)
        v, _ = position.apply(stats, splits["val"].images, val["anomaly_map"], motions["val"])
        t0 = time.perf_counter()
        t, z = position.apply(stats, splits["test"].images, test["anomaly_map"], motions["test"])
        ms = 1000 * (time.perf_counter() - t0) / len(t) + (reg_ms if kw["register"] else 0.0)
        out[name] = (v, t, z, ms)
    return out


def framed(n_train: int, n_val: int, n_test: int, size: int, defect_px: float) -> dict:
    """The camera frames the surface: parts rendered at twice the size and cut to their
    middle, so no fixture edge is in view; test images whose defect fell outside the cut
    are dropped (their defect is not in the picture)."""
    full, _ = generate("surfaces", n_train, n_val, n_test, seed=0, image_size=2 * size,
                       defect_px=defect_px)  # fmt: skip
    a, b = size // 2, size // 2 + size
    out = {}
    for name, split in full.items():
        keep = np.ones(len(split), bool)
        masks = split.masks[:, a:b, a:b]
        keep &= (split.labels == 0) | masks.reshape(len(split), -1).any(1)
        out[name] = split.__class__(
            images=np.ascontiguousarray(split.images[keep][:, :, a:b, a:b]),
            labels=split.labels[keep], factors=split.factors[keep],
            masks=np.ascontiguousarray(masks[keep]), severity=split.severity[keep],
            names=tuple(n for n, k in zip(split.names, keep, strict=True) if k),
        )  # fmt: skip
    return out


def bench_highres(args, settings, out: Path, bench) -> list[dict]:
    """Rows in the peer table's format; ``bench`` is the benchmarks/inspection module."""
    size = args.highres
    if args.highres_frame == "surface":
        full = framed(args.n_train, args.n_val, args.n_test, size, args.defect_px)
    else:
        full, _ = generate("surfaces", args.n_train, args.n_val, args.n_test, seed=0,
                           image_size=size, defect_px=args.defect_px)  # fmt: skip
    small = {name: split.__class__(**{**split.__dict__, "images": resize(split.images, SMALL)})
             for name, split in full.items()}  # fmt: skip
    labels, masks = full["test"].labels, full["test"].masks
    name = f"surfaces@{size} {args.highres_frame} ({args.defect_px:g}px defects)"
    rng = np.random.default_rng(0)
    rows = []

    def add(method, scored, maps, train_s, ms, extra=None):
        row = {"dataset": name, "method": method, "train_s": train_s, "ms_per_image": ms,
               **(extra or {})}  # fmt: skip
        row.update(bench.recall_with_interval(scored, labels, rng))
        row.update(bench.pixel_metrics(maps, masks))
        rows.append(row)
        bench.console.log(f"{name} {method}: recall {row['recall']:.3f} "
                          f"auroc {row['image_auroc']:.3f}")  # fmt: skip

    for peer in PEERS:
        scored, fit_s, ms = bench.run_peer(peer, small)
        add(f"{peer}@64", scored, None if scored.maps is None else upsample(scored.maps, size),
            fit_s, ms)  # fmt: skip
    scored, fit_s, ms = bench.run_peer("pixel_gaussian", full)
    add(f"pixel_gaussian@{size}", scored, scored.maps, fit_s, ms)

    tiling = settings.tiling if settings.tiling.tile else TilingConfig(tile=SMALL)
    runs = {"tiles": ([], [], [], [], []), "resize64": ([], [], [], [], [])}
    runs.update({name: ([], [], [], [], []) for name in POSITION_VARIANTS})
    for seed in args.seeds:
        v, t, s, ms, steps = _train_and_score(full, settings, seed, out / f"tiles-s{seed}",
                                              tiling, settings.train.epochs)  # fmt: skip
        for store, value in zip(runs["tiles"], (v, t, s, ms, t["anomaly_map"]), strict=True):
            store.append(value)
        for variant, (pv, pt, pz, pms) in t.pop("position").items():
            shown = pz if seed == args.seeds[0] else None  # one seed's maps are shown
            for store, value in zip(runs[variant], (pv, {"score": pt}, s, ms + pms, shown),
                                    strict=True):  # fmt: skip
                store.append(value)
        # the same optimiser steps for the whole-image model (it sees 1 image, not k tiles)
        epochs = max(1, steps // max(1, len(small["train"]) // settings.train.batch_size))
        v, t, s, ms, _ = _train_and_score(small, settings, seed, out / f"resize-s{seed}",
                                          None, epochs)  # fmt: skip
        for store, value in zip(runs["resize64"], (v, t, s, ms, t["anomaly_map"]), strict=True):
            store.append(value)
    for method, (vals, tests, secs, mss, maps) in runs.items():
        scored = bench.Scored(vals, [t["score"] for t in tests], None)
        shown = upsample(maps[0], size) if method == "resize64" else maps[0]
        extra = {"seeds": len(args.seeds)}
        if method != "resize64":
            extra["tiling"] = f"tile {tiling.tile}, stride {tiling.stride or tiling.tile}"
        add(f"granvae:{method}", scored, shown, float(np.mean(secs)), float(np.mean(mss)), extra)
    return rows
