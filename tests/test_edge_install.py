"""The edge package installs and runs in a FRESH venv with no torch and no granvae.

This is the boundary that matters on a factory device: if anything in deploy/ ever imports
torch or granvae (directly or through a helper), this test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from edge_fixtures import DEPLOY, make_bundle, noisy_gray, png_bytes, tiling_block

pytestmark = pytest.mark.slow

PROBE = textwrap.dedent(
    """
    import importlib, importlib.metadata, json, sys
    import numpy as np
    from granvae_edge import Inspector
    insp = Inspector(sys.argv[1], intra_op_threads=1)
    verdict = insp.score_one(open(sys.argv[2], "rb").read())
    try:
        importlib.import_module("granvae")
        granvae_importable = True
    except ImportError:
        granvae_importable = False
    print(json.dumps({
        "score": verdict.score,
        "torch_loaded": "torch" in sys.modules,
        "mlflow_loaded": "mlflow" in sys.modules,
        "granvae_importable": granvae_importable,
        "module": __import__("granvae_edge").__file__,
        "installed": sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions()),
    }))
    """
)


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH or virtualenv leakage from the test process into the fresh venv."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP", "PIP_PYTHON"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A venv WITHOUT system site-packages, with `pip install <deploy>` and nothing else.

    ``--without-pip`` plus this interpreter's pip (``pip --python``) skips ensurepip, which is
    most of the cost of a fresh venv; the install itself is an ordinary pip install.
    """
    root = tmp_path_factory.mktemp("edge-venv")
    venv = root / "venv"
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources.
    junk = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    source = shutil.copytree(DEPLOY, root / "deploy", ignore=junk)
    env = _clean_env()
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        timeout=120,
        env=env,
    )
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
         "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return venv


def test_fresh_venv_has_no_torch_and_no_granvae(fresh_venv, tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    image = tmp_path / "img.png"
    image.write_bytes(png_bytes(noisy_gray(np.random.default_rng(0), 30)))
    result = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-c", PROBE, str(bundle), str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
        cwd=tmp_path,  # not the repo root, so ./granvae is not importable by accident
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["torch_loaded"] is False
    assert report["mlflow_loaded"] is False
    assert report["granvae_importable"] is False
    assert str(fresh_venv) in report["module"]  # the installed copy, not the source tree
    assert report["score"] > 0

    assert "granvae-edge" in report["installed"]
    assert not [d for d in report["installed"] if "torch" in d or d in ("mlflow", "granvae")]


def _verify(fresh_venv, bundle, cwd) -> subprocess.CompletedProcess[str]:
    """`granvae-edge verify` (load, check, smoke-score a blank image) in the torch-free venv."""
    return subprocess.run(
        [str(fresh_venv / "bin" / "granvae-edge"), "verify", str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
        cwd=cwd,
    )


def test_console_script_runs_in_fresh_venv(fresh_venv, tmp_path):
    result = _verify(fresh_venv, make_bundle(tmp_path / "bundle"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK")


def test_tiled_bundle_scores_in_fresh_venv(fresh_venv, tmp_path):
    """Tiling, stitching and smoothing are numpy only: a full-size image scores without torch."""
    bundle = make_bundle(tmp_path / "bundle", tiling=tiling_block(32, 16, 256))
    result = _verify(fresh_venv, bundle, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "225 tiles of an image 256x256, stride 16" in result.stdout
