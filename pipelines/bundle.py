"""Hand a sweep's winner to granvae's exporter, then to the edge runtime's verifier.

`granvae.export.from_sweep.export_from_sweep` reads everything it needs from the sweep
folder (model, threshold, metrics, the data store and its version from sweep.json), so
the flow and the DVC stage pass only a folder and an id. Verification runs
`granvae_edge verify` in a fresh interpreter, exactly as a device would: no torch, no
granvae, only the bundle folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

DEPLOY_DIR = Path(__file__).resolve().parents[1] / "deploy"


class VerifyError(RuntimeError):
    """The edge runtime refused the bundle; the message is its own output."""


def export_winner(
    sweep_dir: Path, candidate_id: str, out_dir: Path, export_opts: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Export the winner's ONNX bundle (parity-gated); returns paths, not models."""
    from granvae.export.from_sweep import export_from_sweep

    opts = export_opts or {}
    result = export_from_sweep(sweep_dir, candidate_id, out_dir, int8=bool(opts.get("int8")))
    return {"bundle": str(result.bundle_dir), "precision": result.precision}


def verify_bundle(bundle_dir: Path) -> str:
    """`python -m granvae_edge verify` in a clean interpreter; its OK line, or VerifyError."""
    env = dict(os.environ)
    if DEPLOY_DIR.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(DEPLOY_DIR), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "granvae_edge", "verify", str(bundle_dir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise VerifyError(f"granvae_edge verify refused {bundle_dir}: {output[-1500:]}")
    # verify prints its OK line first, then notes (the frame contract, an unchecked signature)
    ok = [line for line in output.splitlines() if line.startswith("OK")]
    return ok[0] if ok else (output.splitlines()[-1] if output else "OK")
