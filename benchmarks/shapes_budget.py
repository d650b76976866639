"""Search a CPU budget where g = 1 (beta-TCVAE) disentangles `shapes`: MIG >= 0.2.

The granularity question is only worth asking of a model that disentangles;
at the budget of docs/experiments/shapes-cpu.yaml nothing did (MIG < 0.1). This
script renders a `shapes` subset in which only the chosen factors vary (the
others fixed at index 0: a square at orientation 0), trains beta-TCVAE (g = 1,
MSS) per seed, and measures MIG of the encoder means on held-out renders
after each epoch budget (training resumes from the previous budget's
checkpoint, so epochs 5,15 costs 15 epochs per seed, not 20). One row per
budget: MIG mean and 95% t interval over seeds, and the training time.

    .venv/bin/python benchmarks/shapes_budget.py --epochs 3,10 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from granvae.data.shapes import Shapes
from granvae.metrics.disentanglement.mig import compute_mig
from granvae.metrics.elbo import batches
from granvae.metrics.seeds import mean_interval
from granvae.models import FactorizedVAE, ModelConfig
from granvae.objectives import ObjectiveConfig
from granvae.train import TrainConfig, train

FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--factors", default="scale,pos_x,pos_y", help=f"varying, of {FACTORS}")
    p.add_argument("--n-train", type=int, default=4096)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--epochs", default="3,10", help="cumulative epoch budgets")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--beta", type=float, default=6.0)
    p.add_argument("--latent-dim", type=int, default=6)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def render(shapes: Shapes, varying: list[int], n: int, seed: int):
    """(images, factor indices of the varying factors); the others stay at index 0."""
    rng = np.random.default_rng(seed)
    factors = np.zeros((n, len(FACTORS)), dtype=np.int64)
    for f in varying:
        factors[:, f] = rng.integers(0, shapes.factor_sizes[f], size=n)
    return shapes.render(factors), factors[:, varying]


@torch.no_grad()
def mig_of(model_dir: Path, images: np.ndarray, factors: np.ndarray) -> float:
    model = FactorizedVAE.load(model_dir).eval()
    mu = torch.cat([model.encode(x)[0] for x in batches(images, 256)]).numpy()
    return compute_mig(mu, factors)["mig"]


def run_seed(args, seed: int, budgets: list[int], data) -> list[tuple[float, float]]:
    """[(MIG, cumulative train seconds)] per budget for one seed."""
    (train_x, _), (test_x, test_f) = data
    model_cfg = ModelConfig(
        arch="conv", image_size=args.image_size, latent_dim=args.latent_dim,
        hidden=args.hidden, likelihood="bernoulli",
    )  # fmt: skip
    objective = ObjectiveConfig(name="beta_tcvae", beta=args.beta, estimator="mss")
    out, seconds = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for epochs in budgets:
            cfg = TrainConfig(epochs=epochs, batch_size=args.batch_size, seed=seed, device="cpu")
            start = time.perf_counter()
            result = train(train_x, model_cfg, objective, cfg, tmp, progress=False)
            seconds += time.perf_counter() - start
            if result.status != "finished":
                raise SystemExit(f"seed {seed}, {epochs} epochs: training failed: {result.reason}")
            out.append((mig_of(result.model_dir, test_x, test_f), seconds))
            mig = out[-1][0]
            print(f"seed {seed}, {epochs} epochs: MIG {mig:.3f}, {seconds:.0f} s", flush=True)
    return out


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    names = args.factors.split(",")
    unknown = sorted(set(names) - set(FACTORS))
    if unknown:
        raise SystemExit(f"--factors: unknown factor(s) {unknown}; choose from {FACTORS}")
    varying = [FACTORS.index(n) for n in names]
    budgets = sorted(int(e) for e in args.epochs.split(","))
    shapes = Shapes(args.image_size)
    data = (render(shapes, varying, args.n_train, 1), render(shapes, varying, args.n_test, 2))
    runs = {s: run_seed(args, s, budgets, data) for s in map(int, args.seeds.split(","))}
    print(
        f"shapes {args.image_size}x{args.image_size}, varying {names}, n_train {args.n_train}, "
        f"beta-TCVAE beta={args.beta:g} D={args.latent_dim} hidden={args.hidden}, MSS"
    )
    print("| epochs | MIG per seed | MIG mean [95% CI] | train s per seed |")
    print("|---|---|---|---|")
    for i, epochs in enumerate(budgets):
        migs = [runs[s][i][0] for s in runs]
        secs = np.mean([runs[s][i][1] for s in runs])
        m = mean_interval(migs)
        per = ", ".join(f"{v:.3f}" for v in migs)
        ci = f"{m['mean']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"
        print(f"| {epochs} | {per} | {ci} | {secs:.0f} |")


if __name__ == "__main__":
    main()
