"""Wall time of a 4-candidate sweep with 1 worker vs 2 workers, side by side in one run.

    python benchmarks/sweep.py [--epochs 2] [--n 1024]

Target on the 2-core CPU machine: 2 workers <= 0.6 x the 1-worker time. Each
worker process gets cores // workers torch threads, so the comparison is
'one process using both cores' against 'two processes using one core each'.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from granvae.config import load_settings
from granvae.data import generate, write_dataset
from granvae.sweep import run_sweep


def _settings(epochs: int):
    return load_settings(
        None,
        {
            "model": {"arch": "conv", "latent_dim": 10},
            "train": {"epochs": epochs, "batch_size": 64},
            "sweep": {"granularities": [1, 2, 5, 10], "betas": [4.0]},
            "evaluation": {
                "iwae_k": 5,
                "iwae_images": 64,
                "latency_repeats": 5,
                "disentanglement": False,
            },
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="granvae-bench-sweep-"))
    try:
        splits, meta = generate("surfaces", args.n, 256, 256, seed=0, image_size=args.image_size)
        write_dataset(root / "data", splits, meta)
        times = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            rows = run_sweep(
                _settings(args.epochs),
                root / "data",
                root / f"w{workers}",
                progress=False,
                workers=workers,
            )
            times[workers] = time.perf_counter() - t0
            assert all(r["status"] == "finished" for r in rows), rows
        print(
            f"4 candidates (g = 1, 2, 5, 10; beta 4), surfaces {args.image_size}x"
            f"{args.image_size}, {args.n} train images, {args.epochs} epochs, with evaluation"
        )
        print(f"{'workers':<10}{'wall s':>10}{'vs 1 worker':>14}")
        for workers, t in times.items():
            print(f"{workers:<10}{t:>10.1f}{t / times[1]:>14.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
