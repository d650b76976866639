"""Peak RSS per decoded pixel of 8 M-pixel bombs (16-bit square, 8-bit 8,000,000 x 1 strip).

Usage: python benchmarks/decode_memory.py DEPLOY_DIR [OUT_DIR]. DEPLOY_DIR is the folder
holding granvae_edge (this checkout's deploy/, or another checkout's, to compare runtimes).
Each file is scored by `granvae-edge score` in its own process with a fixture bundle that has
no frame contract (so the bomb is decoded, not refused); the figure is that process's peak RSS
minus the peak of scoring a 32x32 frame, divided by the pixel count.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import numpy as np  # noqa: E402
from edge_fixtures import make_bundle, png_bytes  # noqa: E402
from PIL import Image  # noqa: E402

deploy = str(Path(sys.argv[1]).resolve())
out = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="decode-memory-")
os.makedirs(out, exist_ok=True)
N = 8_000_000
side = int(N**0.5)
Image.fromarray(np.zeros((side, side), np.uint16)).save(f"{out}/bomb16.png")
Image.new("L", (N, 1)).save(f"{out}/strip.png")
open(f"{out}/small.png", "wb").write(png_bytes(np.full((32, 32), 128, np.uint8)))
b = make_bundle(f"{out}/b", threshold=3.0)
PROBE = (
    "import resource,sys\nfrom granvae_edge.cli import main\nmain(sys.argv[1:])\n"
    "print('KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"
)
env = dict(os.environ, PYTHONPATH=deploy)


def kb(img):
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            "score",
            img,
            "--bundle",
            str(b),
            "--threads",
            "1",
            "--max-pixels",
            str(N),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    return int(p.stderr.rsplit("KB", 1)[1].split()[0]), p.stdout.strip()[:120]


base = kb(f"{out}/small.png")[0]
for name in ("bomb16.png", "strip.png"):
    peak, line = kb(f"{out}/{name}")
    print(f"{deploy}: {name}: {(peak - base) * 1024 / N:.2f} bytes/pixel above baseline ({line})")
