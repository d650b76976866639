"""Pull refuses a signed bundle that somebody changed in the artifact store (real `mlflow server`).

The attack of the issue: overwrite the registered version's manifest.json (threshold 1e6) or its
statistics file, or re-sign it with a foreign key, through the store's ordinary artifact upload.
A device with the promoter's public key refuses the download and keeps its installed bundle.
"""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from edge_fixtures import run_cli
from granvae_edge import load_bundle
from granvae_edge.pull import PullError, pull
from granvae_edge.signature import TrustStore
from signing_fixtures import STATS_FILE, make_keys, make_signed_bundle, set_threshold

from granvae.signing import sign_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registered(mlflow_server, tmp_path_factory):
    """A signed bundle registered as granvae's tracking code does; (name, run_id, keys, work)."""
    import mlflow
    import mlflow.onnx
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    work = tmp_path_factory.mktemp("signed-register")
    key, public = make_keys(work / "keys")
    source = make_signed_bundle(work / "source", key, threshold=2.5)
    name = "edge-pull-signed"
    with pytest.MonkeyPatch.context() as mp, _use_tracking_uri(mlflow_server):
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        with mlflow.start_run() as run:
            mlflow.onnx.save_model(onnx.load(str(source / "model.onnx")), str(work / "bundle"))
            for name_ in ("manifest.json", "manifest.sig", STATS_FILE):
                shutil.copy(source / name_, work / "bundle" / name_)
            mlflow.log_artifacts(str(work / "bundle"), artifact_path="bundle")
        version = mlflow.register_model(f"runs:/{run.info.run_id}/bundle", name)
    return name, str(version.version), run.info.run_id, public, work


def _upload(server, run_id, path):
    """Overwrite one artifact of the version's run, as anyone with store access could."""
    import mlflow

    mlflow.MlflowClient(tracking_uri=server).log_artifact(run_id, str(path), "bundle")


def test_pull_installs_a_signed_bundle_and_refuses_each_forgery(
    mlflow_server, registered, tmp_path
):
    name, version, run_id, public, work = registered
    uri, out = f"models:/{name}/{version}", tmp_path / "device" / "bundle"
    trust = TrustStore.from_paths([public])
    info = pull(uri, out, tracking_uri=mlflow_server, trust=trust)
    assert info["signed_by"] is not None and load_bundle(out, trust=trust).threshold == 2.5

    forged = tmp_path / "forged"
    shutil.copytree(work / "source", forged)
    set_threshold(forged, 1e6)  # the manifest changes, the signature is the promoter's old one
    _upload(mlflow_server, run_id, forged / "manifest.json")
    result = run_cli("pull", "--model-uri", uri, "--out", str(out), "--tracking-uri",
                     mlflow_server, "--trusted-key", str(public))  # fmt: skip
    assert result.returncode == 1 and "bad signature" in result.stderr, result.stderr

    _upload(mlflow_server, run_id, work / "source" / "manifest.json")  # manifest restored ...
    (forged / STATS_FILE).write_bytes(b"forged statistics\n")  # ... statistics swapped
    _upload(mlflow_server, run_id, forged / STATS_FILE)
    with pytest.raises(PullError, match="sha256 mismatch"):
        pull(uri, out, tracking_uri=mlflow_server, trust=trust)

    _upload(mlflow_server, run_id, work / "source" / STATS_FILE)
    other_key, _ = make_keys(tmp_path / "attacker-keys")
    set_threshold(forged, 1e6)
    sign_bundle(forged, other_key)  # a well-formed signature by a key the device does not trust
    _upload(mlflow_server, run_id, forged / "manifest.json")
    _upload(mlflow_server, run_id, forged / "manifest.sig")
    with pytest.raises(PullError, match="not a trusted one"):
        pull(uri, out, tracking_uri=mlflow_server, trust=trust)

    assert load_bundle(out, trust=trust).threshold == 2.5  # the installed bundle is untouched
    assert json.loads((out / "manifest.json").read_text())["threshold"]["value"] == 2.5
