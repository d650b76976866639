"""Peak RSS per decoded pixel of 8 M-pixel bombs (16-bit square, 8-bit 8,000,000 x 1 strip).

Usage: python benchmarks/decode_memory.py DEPLOY_DIR [OUT_DIR]. DEPLOY_DIR is the folder
holding granvae_edge (this checkout's deploy/, or another checkout's, to compare runtimes).
Each file is scored by `granvae-edge score` in its own process with a fixture bundle that has
no frame contract (so the bomb is decoded, not refused); the figure is that process's peak RSS
minus the peak of scoring a 32x32 frame, divided by the pixel count.
"""

import json
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
    "import sys\nfrom granvae_edge.cli import main\nmain(sys.argv[1:])\n"
    "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM:')][0].split()[1]\n"
    "print('KB', int(hwm), file=sys.stderr)"
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


# Concurrent bombs against a server with inflight 2: peak RSS against the stated bound, with
# the server's allocator tuning (limits.steady_allocator) and without it, side by side.
SERVER_PROBE = """
import json, sys, threading, urllib.request
import granvae_edge.server as srv
from granvae_edge.server import ServerLimits, make_server
if sys.argv[1] == "off":
    srv.steady_allocator = lambda: False
s = make_server(sys.argv[2], "127.0.0.1", 0, intra_op_threads=1, limits=ServerLimits(
    max_bytes=1 << 24, max_pixels=int(sys.argv[3]), inflight=2, queue_wait_s=300,
    request_timeout_s=300))
threading.Thread(target=s.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{s.server_address[1]}/score"
data = open(sys.argv[4], "rb").read()
codes = []
def send():
    req = urllib.request.Request(url, data=data, method="POST")
    with urllib.request.urlopen(req, timeout=300) as r:
        codes.append(r.status)
for _ in range(2):  # two waves: new handler threads each time
    ts = [threading.Thread(target=send) for _ in range(int(sys.argv[5]))]
    [t.start() for t in ts]; [t.join() for t in ts]
hwm = [x for x in open("/proc/self/status") if x.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"peak_kb": int(hwm),
                  "bound": s.memory_bound(), "codes": sorted(set(codes))}))
"""
for clients in (4, 16):
    for mode in ("on", "off"):
        p = subprocess.run(
            [sys.executable, "-c", SERVER_PROBE, mode, str(b), str(N), f"{out}/bomb16.png",
             str(clients)],
            capture_output=True, text=True, env=env, timeout=900,
        )  # fmt: skip
        r = json.loads(p.stdout.strip().splitlines()[-1])
        print(
            f"server inflight 2, {clients} clients x 2 waves of 16-bit bombs, allocator tuning "
            f"{mode}: peak RSS {r['peak_kb'] / 1024:.0f} MB, stated bound "
            f"{r['bound'] / 2**20:.0f} MB (+ ~{base / 1024:.0f} MB process), answers {r['codes']}"
        )
