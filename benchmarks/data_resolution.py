"""Data at working resolution: generator speed by image side, and what an import of large
images costs in time and peak memory, streamed (import_mvtec) vs in memory (load + write).

    python benchmarks/data_resolution.py [--n 8] [--import-n 64] [--import-size 1024]

Each import runs in its own process and reads its own peak RSS (VmHWM, which exec resets;
ru_maxrss would inherit this process's peak across fork). The streamed
import should peak near one shard (--shard-mb) above the interpreter; the in-memory path
holds the whole data set plus its shards' bytes.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from granvae.data import generate
from granvae.data.to_folder import write_mvtec

IMPORT = """
import re, sys, time
from pathlib import Path
from granvae.data import import_mvtec, load_mvtec, write_dataset
mode, root, out, shard_mb = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
if mode == "streamed":
    import_mvtec(root, out, shard_bytes=shard_mb * 2**20)
else:
    write_dataset(out, *load_mvtec(root), shard_bytes=shard_mb * 2**20)
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)
print(time.perf_counter() - t0, int(hwm) / 1024)
"""


def _generation(n: int) -> None:
    print("| side px | defect_px | s per image (half the test images with a defect) |")
    print("|---|---|---|")
    for side, defect_px in ((64, None), (256, None), (512, None), (512, 6.0)):
        generate("surfaces", 1, 1, 2, 0, image_size=side, defect_px=defect_px)  # warm
        start = time.perf_counter()
        generate("surfaces", 1, 1, n, 0, image_size=side, defect_px=defect_px)
        per = (time.perf_counter() - start) / (n + 2)
        print(f"| {side} | {defect_px or 'share of side'} | {per:.3f} |")


def _imports(n: int, side: int, shard_mb: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        splits, meta = generate("surfaces", n, 0, max(2, n // 4), 0, image_size=side)
        root = write_mvtec(Path(tmp) / "line", splits, meta)
        del splits
        raw_mb = (n + max(2, n // 4)) * 2 * side * side / 2**20
        print(f"\nimport of {n} + {max(2, n // 4)} images of {side}x{side} ({raw_mb:.0f} MiB "
              f"image + mask pixels), shards of {shard_mb} MiB")  # fmt: skip
        print("| path | s | peak RSS MiB |")
        print("|---|---|---|")
        for mode in ("streamed", "in-memory"):
            out = Path(tmp) / mode
            args = [sys.executable, "-c", IMPORT, mode, str(root), str(out), str(shard_mb)]
            seconds, rss = subprocess.run(
                args, check=True, capture_output=True, text=True
            ).stdout.split()
            print(f"| {mode} | {float(seconds):.1f} | {float(rss):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="test images per generator row")
    parser.add_argument("--import-n", type=int, default=64)
    parser.add_argument("--import-size", type=int, default=1024)
    parser.add_argument("--shard-mb", type=int, default=16)
    args = parser.parse_args()
    _generation(args.n)
    _imports(args.import_n, args.import_size, args.shard_mb)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n(this process, generating the folder: peak RSS {peak:.0f} MiB)")


if __name__ == "__main__":
    main()
