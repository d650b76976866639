"""Training-step cost of each objective, side by side in one run.

    python benchmarks/train_step.py [--batch 256] [--latent-dim 10] [--steps 10]

Prints images/s and step time per objective at B=256, D=10 on 64x64 shapes,
the ratio beta_stcvae / vae step time (target <= 1.05 on the CPU: the group TC
term is O(B^2 D), tiny next to the convolutions), and images/s as a share of
the CPU's fp32 peak (target >= 25%). Objectives are interleaved round-robin so
drift in the machine's speed hits them all alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import count_forward_flops, cpu_peak_gflops  # noqa: E402

from granvae.data import generate  # noqa: E402
from granvae.models import FactorizedVAE, ModelConfig  # noqa: E402
from granvae.objectives import ObjectiveConfig, compute_terms  # noqa: E402
from granvae.train import MEMORY_FORMATS  # noqa: E402

OBJECTIVES = {
    "vae": ObjectiveConfig(name="vae"),
    "beta_vae": ObjectiveConfig(name="beta_vae", beta=4.0),
    "beta_tcvae": ObjectiveConfig(name="beta_tcvae", beta=4.0),
    "beta_stcvae (g=2)": ObjectiveConfig(name="beta_stcvae", beta=4.0, granularity=2),
    "beta_stcvae (g=5)": ObjectiveConfig(name="beta_stcvae", beta=4.0, granularity=5),
}


def _step(
    model: FactorizedVAE, optim: torch.optim.Optimizer, x: torch.Tensor, objective: ObjectiveConfig
) -> float:
    t0 = time.perf_counter()
    terms = compute_terms(x, model(x), model.config, objective, dataset_size=100_000)
    optim.zero_grad(set_to_none=True)
    terms["loss"].backward()
    optim.step()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    splits, _ = generate("shapes", args.batch, 1, 1, seed=0)
    cfg = ModelConfig(arch="conv", image_size=64, latent_dim=args.latent_dim)
    fmt = MEMORY_FORMATS[cfg.arch]  # the trainer's layout: channels-last for convs
    x = (torch.from_numpy(splits["train"].images).float() / 255.0).contiguous(memory_format=fmt)
    models = {name: FactorizedVAE(cfg).to(memory_format=fmt) for name in OBJECTIVES}
    optims = {name: torch.optim.Adam(m.parameters(), 1e-4) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in OBJECTIVES}
    for i in range(args.warmup + args.steps):
        for name, objective in OBJECTIVES.items():
            t = _step(models[name], optims[name], x, objective)
            if i >= args.warmup:
                times[name].append(t)
    flops_img = 3 * count_forward_flops(models["vae"], x[:1])
    peak, how = cpu_peak_gflops()
    base = statistics.median(times["vae"])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"D={args.latent_dim}, 64x64 shapes, median of {args.steps} steps"
    )
    print("layout: channels-last (as granvae.train uses); objectives interleaved round-robin")
    print(f"train FLOPs/image = 3 x forward = {flops_img / 1e6:.1f} MFLOP; peak: {how}")
    print(f"{'objective':<20}{'step ms':>10}{'images/s':>10}{'vs vae':>9}{'% of peak':>11}")
    for name, ts in times.items():
        step = statistics.median(ts)
        ips = args.batch / step
        share = 100 * ips * flops_img / (peak * 1e9)
        print(f"{name:<20}{step * 1e3:>10.1f}{ips:>10.0f}{step / base:>9.3f}{share:>10.1f}%")


if __name__ == "__main__":
    main()
