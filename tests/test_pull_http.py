"""A device pulls over HTTP alone: registered through a server that proxies artifacts,
pulled by a process that cannot see the store's folder at all.

The pulling process runs in its own mount namespace (`unshare`) with an empty tmpfs over
the server's root (sqlite file and artifact folder), so a `file://` source could not be
read there; only the server's `mlflow-artifacts:/` proxy can deliver the bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from edge_fixtures import DEPLOY, make_bundle, sha256_file
from sweep_fixtures import fast_store, make_sweep, unique

from granvae.select import load_rows, select, write_decision
from granvae.tracking import register_winner

pytestmark = pytest.mark.slow


def _namespaces_allowed() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "-rm", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(
    not _namespaces_allowed(),
    reason="this host forbids unprivileged mount namespaces, so no process can be denied "
    "the store's path (needs util-linux `unshare -rm`)",
)
def test_pull_over_http_from_a_process_denied_the_store(mlflow_server_process, tmp_path):
    server = mlflow_server_process
    store, name = fast_store(server.uri, tmp_path), unique("http")
    bundle = make_bundle(tmp_path / "bundle", height=16, width=16)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["candidate"] = {"objective": "beta_stcvae", "granularity": 2, "beta": 4.0,
                             "latent_dim": 4, "seed": 0}  # fmt: skip
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    sweep = make_sweep(tmp_path / "sweep")
    decision = select(load_rows(sweep))
    write_decision(decision, sweep)
    version = register_winner(sweep, decision, name, bundle_dir=bundle, store=store)
    source = store.client.get_model_version(name, str(version)).source
    assert source.startswith("mlflow-artifacts:/"), source

    out = tmp_path / "device" / "bundle"
    script = (
        'mount -t tmpfs tmpfs "$STORE" && test -z "$(ls -A "$STORE")" && '
        'exec "$PY" -m granvae_edge pull --model-uri "$URI" --out "$OUT" --tracking-uri "$TRACK"'
    )
    env = {**os.environ, "STORE": str(server.root), "PY": sys.executable, "OUT": str(out),
           "URI": f"models:/{name}@challenger", "TRACK": server.uri,
           "PYTHONPATH": str(DEPLOY)}  # the edge runtime from source, as the edge tests use it
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sha256_file(out / "model.onnx") == sha256_file(bundle / "model.onnx")
    pulled = json.loads((out / "manifest.json").read_text())
    assert pulled["mlflow_model_uri"] == f"models:/{name}/{version}"
    assert any((server.root / "artifacts").rglob("model.onnx"))  # the store was there all along
