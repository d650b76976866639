"""The quick profile end to end, and how much of it is not training.

    python benchmarks/retrain.py [--profile quick] [--keep DIR]
    python benchmarks/retrain.py --stack [--stack-root runs/stack] [--epochs N]  # + on the stack

Runs `granvae retrain --profile quick` in a scratch folder (its own git+DVC data repo,
local DVC remote, MLflow sqlite store, ephemeral Prefect API: the embedded defaults) and
prints the wall time of each part. "Training" is the sweep stage: every candidate trained
and evaluated (evaluation lives inside granvae.sweep.run_candidate), worker start-up
included. Everything else (Prefect start-up, ingest + validation, DVC, selection, ONNX
export + verification, MLflow registration) is overhead; the target is <= 15% of the total.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it")
    parser.add_argument("--stack", action="store_true", help="then the same on the stack")
    parser.add_argument("--stack-root", type=Path, default=None, help="a running stack")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    args = parser.parse_args()
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="granvae-bench-"))
    overrides = {
        "pipeline": {"data_repo": str(scratch / "data-repo"), "work_dir": str(scratch / "work")},
        "tracking": {"workdir": str(scratch)},
    }
    epochs = {"train": {"epochs": args.epochs}} if args.epochs else {}
    overrides.update(epochs)
    from pipelines.runtime import prestart

    prestart()  # as `granvae retrain` does
    from pipelines.cli import describe
    from pipelines.flow import run_retrain

    imported = time.perf_counter()
    summary = run_retrain(str(ROOT / "params.yaml"), args.profile, overrides)
    total = time.perf_counter() - T0
    report(summary, total, imported - T0)
    print("\n" + describe(summary))
    if args.stack:
        from retrain_stack import print_side_by_side, stack_benchmark

        on_stack = stack_benchmark(args.profile, scratch, args.stack_root, epochs)
        print_side_by_side({"total": total, "sweep": summary["seconds"]["sweep"]}, on_stack)
    if args.keep is None:
        shutil.rmtree(scratch, ignore_errors=True)


def report(summary: dict, total: float, imports: float) -> None:
    sec = summary["seconds"]
    flow = sec["data"] + sec["sweep"] + sec["ship"]
    startup = total - flow  # imports, Prefect API start-up, flow run bookkeeping
    overhead = total - sec["sweep"]
    n = len(summary["candidates"])
    print(f"profile {summary.get('profile', '?')}: {n} candidates")
    print(f"total wall                 {total:7.1f} s")
    print(f"  start-up (imports {imports:.1f} s, Prefect API, flow bookkeeping) {startup:7.1f} s")
    print(f"  ingest+validate+DVC      {sec['data']:7.1f} s")
    print(f"  sweep (train+evaluate)   {sec['sweep']:7.1f} s")
    print(f"    sum of training loops  {sec['training_loops']:7.1f} s (summed over candidates)")
    print(f"  select+export+verify+register {sec['ship']:7.1f} s")
    share = 100 * overhead / total
    print(f"outside training           {overhead:7.1f} s = {share:.1f}% (target <= 15%)")


if __name__ == "__main__":
    main()
