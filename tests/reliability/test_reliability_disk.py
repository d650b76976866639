"""The disk fills up mid-write: the previous files must be intact and loadable.

"Full" is simulated per process with RLIMIT_FSIZE (a file-size limit, set in a child process
right before the write; SIGXFSZ ignored so the write fails with EFBIG like ENOSPC would), which
needs no root and no loop device. Covered writes: the exporter's bundle (granvae.export), a
training checkpoint (granvae.train), the edge runtime's calibrated manifest and its pull.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from edge_fixtures import REPO, edge_env, make_bundle, noisy_gray, png_bytes, sha256_file
from granvae_edge import load_bundle
from hostile import hostile_registry, registry_routes


def _limited(limit_bytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def _run_limited(
    code: str, limit_bytes: int, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``code`` in a child; ``LIMIT()`` inside it caps file size from that point on."""
    prologue = textwrap.dedent(
        f"""
        import resource, signal
        def LIMIT():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))
        """
    )
    env = {**(env or edge_env()), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-c", prologue + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )  # fmt: skip


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_bundle_write_on_a_full_disk_keeps_the_previous_bundle(tmp_path):
    previous = make_bundle(tmp_path / "bundle", threshold=3.0)
    before = _tree(previous)
    source = make_bundle(tmp_path / "src")  # the "new export": a real ONNX file
    code = f"""
        from granvae.export.bundle import write_bundle
        LIMIT()
        try:
            write_bundle({str(previous)!r}, {str(source / "model.onnx")!r}, groups=[[0]] * 4,
                         threshold={{"value": 1.0, "false_alarm_rate": 0.01, "n_images": 10}},
                         class_names=["good", "defect"], candidate={{}}, data_version="v",
                         overwrite=True)
        except OSError as exc:
            print("refused:", exc)
        else:
            print("written")
    """
    result = _run_limited(code, limit_bytes=512)  # the model is ~3 KB: its copy cannot finish
    assert "refused:" in result.stdout and "File too large" in result.stdout, result.stderr
    assert _tree(previous) == before and load_bundle(previous).threshold == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "src"]  # no temp folder


def test_checkpoint_write_on_a_full_disk_keeps_the_previous_checkpoint(tmp_path):
    ckpt = tmp_path / "model.pt"
    torch.save({"step": 1, "w": torch.ones(4)}, ckpt)
    before = sha256_file(ckpt)
    code = f"""
        import torch
        from granvae.train import _save_atomic
        from pathlib import Path
        LIMIT()
        try:
            _save_atomic({{"step": 2, "w": torch.zeros(50_000)}}, Path({str(ckpt)!r}))
        except (OSError, RuntimeError) as exc:
            print("refused:", type(exc).__name__)
        else:
            print("written")
    """
    result = _run_limited(code, limit_bytes=4096, env=None)
    assert "refused:" in result.stdout, (result.stdout, result.stderr[-2000:])
    assert sha256_file(ckpt) == before
    assert torch.load(ckpt, weights_only=True)["step"] == 1


def test_calibration_on_a_full_disk_keeps_the_live_manifest(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", threshold=3.0)
    good = tmp_path / "good"
    good.mkdir()
    rng = np.random.default_rng(0)
    for k in range(20):
        (good / f"{k}.png").write_bytes(png_bytes(noisy_gray(rng, 10)))
    manifest_size = (bundle / "manifest.json").stat().st_size
    code = f"""
        import sys
        from granvae_edge.cli import main
        LIMIT()
        sys.exit(main(["calibrate", "--bundle", {str(bundle)!r}, "--good-images",
                       {str(good)!r}, "--threads", "1"]))
    """
    before = _tree(bundle)
    result = _run_limited(code, limit_bytes=manifest_size // 2)
    assert result.returncode == 1 and "calibration failed" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert load_bundle(bundle).threshold == 3.0 and load_bundle(bundle).revision == 1
    assert {k: v for k, v in _tree(bundle).items() if not k.startswith(".")} == before
    assert [p.name for p in bundle.iterdir() if p.name.startswith(".")] == []


def test_pull_on_a_full_disk_says_so_and_keeps_the_old_bundle(tmp_path):
    source = make_bundle(tmp_path / "src", threshold=2.5)
    installed = make_bundle(tmp_path / "device" / "bundle", threshold=9.0)
    before = _tree(installed)
    with hostile_registry(registry_routes(source)) as reg:
        result = subprocess.run(
            [sys.executable, "-m", "granvae_edge", "pull", "--model-uri", "models:/m@champion",
             "--out", str(installed), "--tracking-uri", reg.uri, "--retries", "0"],
            capture_output=True, text=True, timeout=60, env=edge_env(),
            preexec_fn=_limited(1024),
        )  # fmt: skip
    assert result.returncode == 1 and "cannot write" in result.stderr, result.stderr
    assert "File too large" in result.stderr and "Traceback" not in result.stderr
    assert _tree(installed) == before
    assert sorted(p.name for p in installed.parent.iterdir()) == ["bundle"]
