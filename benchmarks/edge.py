"""Edge inference benchmark: torch eager vs ONNX fp32 vs ONNX int8 on this CPU.

Not a test: it prints one table. It trains a small conv candidate on
surfaces-like images, exports it with granvae.export, quantises it, and
measures for each engine the latency (p50/p95) and throughput at batch 1 and
64, plus the image AUROC on a labelled test set (good + defects), so a speed
gain is never read without its accuracy cost.

    python benchmarks/edge.py [--epochs 4] [--n-test 200] [--repeats 30]
    python benchmarks/edge.py --full-only    # only the full-image (tiled) rows

Full-image rows (issue 7, benchmarks/edge_full.py): 512x512 and 1024x1024 grey parts
scored by granvae_edge as non-overlapping 64 px tiles; end-to-end latency p50/p95 and the
bare tile batches' share of fp32 peak (nominal and measured in the same run).

Share of peak: throughput_b64 x FLOPs/image / (cores x GHz x FLOP/cycle).
FLOPs/image count only conv/linear layers (2 x multiply-adds); the scoring
math (softplus, sums, KL) is O(pixels) and left out, so the share is a
slight underestimate of the work actually done.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge_full import full_image_rows, measured_peak_gflops, print_full_rows  # noqa: E402
from flops import count_forward_flops, cpu_peak_gflops  # noqa: E402

from granvae.data import generate  # noqa: E402
from granvae.export import (  # noqa: E402
    compare_quantized,
    export_onnx,
    make_session,
    parity_check,
    quantize_int8,
    run_session,
)
from granvae.export.graph import INPUT_NAME, physical_cores
from granvae.export.parity import torch_outputs
from granvae.metrics.inspection import image_auroc
from granvae.metrics.latency import measure_latency
from granvae.metrics.thresholds import calibrate_threshold
from granvae.models import FactorizedVAE, ModelConfig
from granvae.objectives import ObjectiveConfig, make_groups
from granvae.scoring import InspectionHead
from granvae.scoring.tiling import Tiling
from granvae.train import TrainConfig, train

Runner = Callable[[np.ndarray], object]


def load_data(n_train: int, n_test: int, size: int, seed: int) -> dict[str, tuple]:
    splits, _ = generate("surfaces", n_train, 128, n_test, seed=seed, image_size=size)
    return {k: (s.images, s.labels) for k, s in splits.items()} | {"source": "surfaces"}


def time_runner(run: Runner, images: np.ndarray, batch: int, repeats: int) -> dict[str, float]:
    """p50/p95 call latency (ms) over ``repeats`` calls after 3 warm-ups; images/s from p50.

    Timed by granvae.metrics.latency (the numbers a sweep reports), scaled back from
    per-image to per-call milliseconds.
    """
    lat = measure_latency(run, images, (batch,), repeats=repeats, warmup=3)
    p50, p95 = (lat[f"latency_{q}_b{batch}_ms"] * batch for q in ("p50", "p95"))
    return {"p50": p50, "p95": p95, "ips": batch / (p50 / 1e3)}


def train_candidate(data: dict, size: int, epochs: int, work: Path) -> FactorizedVAE:
    # Gaussian likelihood: a Bernoulli NLL on grey levels has a brightness-dependent floor
    # (the entropy of each pixel) that swamps small defects on surfaces' lit plates.
    cfg = ModelConfig(arch="conv", image_size=size, latent_dim=10, likelihood="gaussian")
    objective = ObjectiveConfig(name="beta_stcvae", granularity=2)
    tcfg = TrainConfig(epochs=epochs, batch_size=64, lr=2e-3, num_threads=physical_cores())
    result = train(data["train"][0], cfg, objective, tcfg, work / "cand", progress=False)
    return FactorizedVAE.load(result.model_dir)


def build_engines(
    head: InspectionHead, val: np.ndarray, work: Path
) -> tuple[dict[str, Runner], dict[str, Path]]:
    """Runners on uint8 NHWC batches: torch eager, ONNX fp32, ONNX int8 (static, dynamic)."""
    fp32 = export_onnx(head, work / "model.onnx")
    static = quantize_int8(fp32, work / "static.onnx", mode="static", calibration_images=val)
    dynamic = quantize_int8(fp32, work / "dynamic.onnx", mode="dynamic")
    engines: dict[str, Runner] = {}

    def torch_eager(threads: int) -> Runner:
        @torch.inference_mode()
        def run(batch: np.ndarray) -> object:
            torch.set_num_threads(threads)
            return head(torch.from_numpy(batch))

        return run

    engines["torch eager"] = torch_eager(physical_cores())
    engines["torch eager 1thr"] = torch_eager(1)  # shows intra-op thread thrash on a busy CPU
    for name, path in (
        ("onnx fp32", fp32),
        ("onnx int8 static", static),
        ("onnx int8 dyn", dynamic),
    ):
        session = make_session(path)
        engines[name] = lambda b, s=session: s.run(None, {INPUT_NAME: b})
    return engines, {"fp32": fp32, "static": static, "dynamic": dynamic}


def engine_scores(name: str, head: InspectionHead, paths: dict, images: np.ndarray) -> np.ndarray:
    if name.startswith("torch eager"):
        return torch_outputs(head, images)["score"]
    key = {"onnx fp32": "fp32", "onnx int8 static": "static", "onnx int8 dyn": "dynamic"}[name]
    return run_session(make_session(paths[key]), images)["score"]


def print_table(rows: dict[str, dict], flops: int, peak: float) -> None:
    head = (
        f"{'engine':<17}{'b1 p50 ms':>10}{'b1 p95 ms':>10}{'b1 img/s':>10}"
        f"{'b64 p50 ms':>11}{'b64 p95 ms':>11}{'b64 img/s':>10}{'%peak b64':>10}{'AUROC':>8}"
    )
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        b1, b64 = r["b1"], r["b64"]
        share = 100 * b64["ips"] * flops / (peak * 1e9)
        print(
            f"{name:<17}{b1['p50']:>10.2f}{b1['p95']:>10.2f}{b1['ips']:>10.0f}"
            f"{b64['p50']:>11.1f}{b64['p95']:>11.1f}{b64['ips']:>10.0f}{share:>9.1f}%"
            f"{r['auroc']:>8.3f}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-only", action="store_true",
                        help="only the full-image rows, on an untrained model (same FLOPs)")
    parser.add_argument("--full-repeats", type=int, default=20)
    return parser.parse_args(argv)


def full_image_report(model: FactorizedVAE, repeats: int, work: Path) -> None:
    """The issue-7 rows: whole 512/1024 px images through the tiled edge path."""
    groups = make_groups(model.config.latent_dim, 2)
    tile = model.config.image_size
    head = InspectionHead(model, groups, score="l2_max", tiling=Tiling(tile, tile)).eval()
    example = torch.zeros(1, model.config.in_channels, model.config.image_size,
                          model.config.image_size)  # fmt: skip
    flops = count_forward_flops(model, example)
    peak, assumption = cpu_peak_gflops(physical_cores())
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    measured = measured_peak_gflops()
    rows = full_image_rows(head, groups, flops, repeats, work)
    print(f"CPU fp32 peak: {assumption}; load average {load} on {os.cpu_count()} CPUs")
    print_full_rows(rows, flops, peak, measured)


def full_only(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    cfg = ModelConfig(arch="conv", image_size=64, latent_dim=10, likelihood="gaussian")
    with tempfile.TemporaryDirectory(prefix="granvae-bench-") as tmp:
        full_image_report(FactorizedVAE(cfg).eval(), args.full_repeats, Path(tmp))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(physical_cores())
    if args.full_only:
        return full_only(args)
    data = load_data(args.n_train, args.n_test, args.image_size, args.seed)
    with tempfile.TemporaryDirectory(prefix="granvae-bench-") as tmp:
        work = Path(tmp)
        model = train_candidate(data, args.image_size, args.epochs, work)
        head = InspectionHead(model, make_groups(model.config.latent_dim, 2)).eval()
        nhwc = {k: np.ascontiguousarray(data[k][0].transpose(0, 2, 3, 1)) for k in ("val", "test")}
        labels = data["test"][1]
        engines, paths = build_engines(head, nhwc["val"], work)
        threshold = calibrate_threshold(torch_outputs(head, nhwc["val"])["score"], 0.01)
        parity = parity_check(head, paths["fp32"], nhwc["test"], threshold.value)
        comparison = compare_quantized(
            paths["fp32"], paths["static"], nhwc["test"], labels, threshold.value
        )
        rows = {}
        for name, run in engines.items():
            rows[name] = {
                "b1": time_runner(run, nhwc["test"], 1, args.repeats * 4),
                "b64": time_runner(run, nhwc["test"], 64, args.repeats),
                "auroc": image_auroc(engine_scores(name, head, paths, nhwc["test"]), labels),
            }
        full_work = work / "full"
        full_work.mkdir()
        report(args, data, model, rows, parity, comparison, time.perf_counter() - t0)
        full_image_report(model, args.full_repeats, full_work)
    return 0


def report(args, data, model, rows, parity, comparison, seconds: float) -> None:
    cfg = model.config
    example = torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size)
    flops = count_forward_flops(model, example)
    peak, assumption = cpu_peak_gflops(physical_cores())
    print(
        f"granvae edge benchmark: {cfg.arch} {cfg.image_size}x{cfg.image_size}x{cfg.in_channels}, "
        f"latent {cfg.latent_dim}, {args.epochs} epochs on {len(data['train'][0])} "
        f"{data['source']} images; test n={len(data['test'][1])} "
        f"({int((data['test'][1] > 0).sum())} defects); torch {torch.__version__}"
    )
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"threads: torch {physical_cores()} (and 1), onnxruntime intra-op {physical_cores()}; "
        f"load average {load} on {os.cpu_count()} CPUs (other load inflates p95)"
    )
    print(f"FLOPs/image: {flops / 1e6:.1f} MFLOP (2 x MACs of conv/convT/linear layers)")
    print(f"CPU fp32 peak: {peak:.1f} GFLOP/s = {assumption}\n")
    print_table(rows, flops, peak)
    eager, fp32, int8 = rows["torch eager"], rows["onnx fp32"], rows["onnx int8 static"]
    print(
        f"\nONNX fp32 / torch eager latency, b1 p50: {fp32['b1']['p50'] / eager['b1']['p50']:.2f}"
    )
    print(
        f"ONNX int8 static / fp32 latency, b1 p50: {int8['b1']['p50'] / fp32['b1']['p50']:.2f}, "
        f"b64 p50: {int8['b64']['p50'] / fp32['b64']['p50']:.2f}"
    )
    print(
        f"parity (torch vs ONNX fp32, test set): {'PASS' if parity.passed else 'FAIL'}: "
        f"{parity.describe()}"
    )
    print(
        f"int8 static vs fp32: AUROC drop {comparison['auroc_drop']:+.4f}, decision agreement "
        f"{comparison['decision_agreement']:.3f}, max |d score| "
        f"{comparison['max_abs_diff_score']:.3g}"
    )
    print(f"total {seconds:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
