"""What the feature-bank rule costs per image, beside the default rule, in one run.

    python benchmarks/rule_latency.py [--sizes 64,128] [--repeats 50]

For each working size, one params.yaml-shaped conv model (untrained: the cost of a graph
does not depend on its weights) gets a head per rule (`l2_max`, `feat_knn` with the
default 4096-row bank fitted on generated good parts) and is timed two ways: the torch
head at batch 1, as the retrain flow's latency gate measures it (granvae.metrics.latency,
`latency_p95_b1_ms`), and the exported ONNX graph in onnxruntime at batch 1, which is what
the edge runs. Prints p50 / p95 milliseconds and the ratio to `l2_max`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from granvae.config import load_settings  # noqa: E402
from granvae.data import generate  # noqa: E402
from granvae.export import export_onnx, make_session  # noqa: E402
from granvae.export.graph import INPUT_NAME  # noqa: E402
from granvae.metrics.latency import measure_latency, torch_score_fn  # noqa: E402
from granvae.models import FactorizedVAE  # noqa: E402
from granvae.objectives import make_groups  # noqa: E402
from granvae.scoring import build_head  # noqa: E402

RULES = ("l2_max", "feat_knn")


def timings(run, images: np.ndarray, repeats: int) -> tuple[float, float]:
    lat = measure_latency(run, images, (1,), repeats=repeats, warmup=3)
    return lat["latency_p50_b1_ms"], lat["latency_p95_b1_ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    settings = load_settings(ROOT / "params.yaml")
    torch.manual_seed(0)
    print(f"torch threads {torch.get_num_threads()}; batch 1; p50 / p95 ms")
    print(f"{'size':>5} {'rule':<9} {'torch p50':>10} {'torch p95':>10} {'onnx p50':>9} "
          f"{'onnx p95':>9} {'onnx x l2_max':>14}")  # fmt: skip
    for size in [int(s) for s in args.sizes.split(",")]:
        splits, _ = generate("surfaces", 256, 8, 64, seed=0, image_size=size)
        model = FactorizedVAE(settings.model.model_copy(update={"image_size": size})).eval()
        groups = make_groups(model.config.latent_dim, settings.objective.granularity)
        images = splits["test"].images.transpose(0, 2, 3, 1).copy()
        base = None
        for rule in RULES:
            head = build_head(model, groups, rule, splits["train"].images,
                              settings.evaluation.smooth_sigma)  # fmt: skip
            t50, t95 = timings(torch_score_fn(head), images, args.repeats)
            with tempfile.TemporaryDirectory() as tmp:
                session = make_session(export_onnx(head, Path(tmp) / "model.onnx"))
                o50, o95 = timings(lambda b, s=session: s.run(None, {INPUT_NAME: b}), images,
                                   args.repeats)  # fmt: skip
            base = base or o50
            print(f"{size:>5} {rule:<9} {t50:>10.1f} {t95:>10.1f} {o50:>9.1f} {o95:>9.1f} "
                  f"{o50 / base:>13.1f}x", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
