"""Full-image rows of the edge benchmark: a 512 or 1024 px grey part scored as 64 px tiles.

Imported by benchmarks/edge.py (``--full-only`` runs just these rows). The model, as a
tiled head (rule l2_max, 64 px tiles, stride 64), is exported as its tile graph with the
manifest ``tiling`` block granvae.export writes; the granvae_edge Inspector then scores
whole images: prepare, tile, onnxruntime in batches of up to 64 tiles, stitch, smooth,
reduce. Latency does not depend on the weights.

Share of peak: tiles/s on the bare tile batches x FLOPs/tile / peak, against both the
nominal peak (flops.cpu_peak_gflops) and a peak measured in the same run (a float32
matrix product through numpy's BLAS, timed right before the tiles), so a loaded machine
lowers both numbers together and the ratio stays readable.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from granvae.export import export_onnx, write_bundle
from granvae.export.graph import physical_cores
from granvae.export.tiled import tiling_block
from granvae.scoring import InspectionHead
from granvae.scoring.head import TileGraph

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
if str(DEPLOY) not in sys.path:
    sys.path.insert(0, str(DEPLOY))
from granvae_edge import Inspector  # noqa: E402
from granvae_edge.tiled import TILE_BATCH, run_tiles  # noqa: E402

SIZES = (512, 1024)


def tiled_bundle(head: InspectionHead, groups: list, size: int, work: Path) -> Path:
    """Export a tiled head's tile graph and write its bundle, tiled over size x size."""
    onnx_path = work / "tile.onnx"
    if not onnx_path.exists():
        export_onnx(TileGraph(head).eval(), onnx_path)
    out = work / f"bundle-{size}"
    threshold = {"value": 1.0, "false_alarm_rate": 0.01, "n_images": 1, "score": head.score_kind}
    write_bundle(out, onnx_path, groups=groups, threshold=threshold, class_names=["good"],
                 candidate={"bench": True}, data_version="bench", overwrite=True,
                 tiling=tiling_block(head, size, size))  # fmt: skip
    return out


def grey_part(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 90 + 60 * xx + 20 * np.sin(12 * yy) + rng.normal(0, 6, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def _timed(fn, repeats: int, warmup: int = 2) -> np.ndarray:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def measured_peak_gflops(n: int = 1024, repeats: int = 10) -> float:
    """Best float32 n^3 matrix product through numpy's BLAS, GFLOP/s (2 n^3 per product)."""
    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n), dtype=np.float32) for _ in range(2))
    return 2 * n**3 / float(_timed(lambda: a @ b, repeats).min()) / 1e9


def full_image_row(insp: Inspector, flops_per_tile: int, repeats: int) -> dict:
    """End-to-end latency of one image and the rate of its bare tile batches."""
    size = insp.tiling.image_height
    image = grey_part(size)
    total = _timed(lambda: insp.score_one(image), repeats)
    tiles = insp.tiling.tiles(insp.prepare(image))
    session, name = insp.bundle.session, insp.spec["name"]
    bare = _timed(lambda: run_tiles(session, name, tiles), repeats)
    tile_maps = run_tiles(session, name, tiles)[1]
    post = _timed(lambda: insp.tiling.score(insp.tiling.image_map(tile_maps)), repeats)
    return {
        "size": size, "tiles": len(tiles), "p50": np.percentile(total, 50) * 1e3,
        "p95": np.percentile(total, 95) * 1e3, "tiles_p50": np.median(bare) * 1e3,
        "post_p50": np.median(post) * 1e3,
        "gflops": len(tiles) * flops_per_tile / np.median(bare) / 1e9,
    }  # fmt: skip


def full_image_rows(head, groups, flops_per_tile: int, repeats: int, work: Path) -> list[dict]:
    """One row per size in SIZES, each on its own tiled bundle."""
    threads = physical_cores()
    return [
        full_image_row(
            Inspector(tiled_bundle(head, groups, size, work), intra_op_threads=threads),
            flops_per_tile,
            repeats,
        )
        for size in SIZES
    ]


def print_full_rows(rows: list[dict], flops_per_tile: int, peak: float, measured: float) -> None:
    print(
        f"\nfull images, 64 px tiles, stride 64, batches of <= {TILE_BATCH} tiles "
        f"({flops_per_tile / 1e6:.1f} MFLOP/tile); measured sgemm peak {measured:.0f} GFLOP/s "
        f"({100 * measured / peak:.0f}% of nominal {peak:.0f})"
    )
    head = (
        f"{'image':<11}{'tiles':>6}{'p50 ms':>9}{'p95 ms':>9}{'tiles ms':>10}"
        f"{'stitch+smooth ms':>18}{'GFLOP/s':>9}{'%nominal':>10}{'%measured':>11}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['size']}x{r['size']:<6}{r['tiles']:>6}{r['p50']:>9.1f}{r['p95']:>9.1f}"
            f"{r['tiles_p50']:>10.1f}{r['post_p50']:>18.1f}{r['gflops']:>9.1f}"
            f"{100 * r['gflops'] / peak:>9.1f}%{100 * r['gflops'] / measured:>10.1f}%"
        )
