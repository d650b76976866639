"""Edge pull against a real `mlflow server`, laid out as granvae's tracking code registers bundles.

The model version's source is a run artifact folder ``bundle/`` holding MLmodel, model.onnx and
manifest.json; the edge runtime fetches it through the server's artifact proxy with plain REST.
The edge package itself never imports mlflow; only this test's registration step does.
"""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from edge_fixtures import free_port, make_bundle, run_cli, sha256_file
from granvae_edge import load_bundle
from granvae_edge.pull import PullError, RestClient, fetch_artifacts, parse_model_uri, pull

# ``mlflow_server`` (tests/conftest.py) is the suite's shared, real `mlflow server` process
# (sqlite backend, --artifacts-destination proxy), yielding its http URI.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registered(mlflow_server, tmp_path_factory):
    """Register a bundle as granvae's tracking code will; returns (name, version, source)."""
    import mlflow
    import mlflow.onnx
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    work = tmp_path_factory.mktemp("register")
    source = make_bundle(work / "source", threshold=2.5)
    name = "edge-pull-test"
    with pytest.MonkeyPatch.context() as mp, _use_tracking_uri(mlflow_server):
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        with mlflow.start_run() as run:
            mlflow.onnx.save_model(onnx.load(str(source / "model.onnx")), str(work / "bundle"))
            shutil.copy(source / "manifest.json", work / "bundle" / "manifest.json")
            mlflow.log_artifacts(str(work / "bundle"), artifact_path="bundle")
        version = mlflow.register_model(f"runs:/{run.info.run_id}/bundle", name)
        mlflow.MlflowClient().set_registered_model_alias(name, "champion", version.version)
    return name, str(version.version), source


def test_pull_by_alias_via_cli_installs_a_verified_bundle(mlflow_server, registered, tmp_path):
    name, version, source = registered
    out = tmp_path / "device" / "bundle"
    result = run_cli(
        "pull", "--model-uri", f"models:/{name}@champion", "--out", str(out),
        "--tracking-uri", mlflow_server,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["version"] == version and info["artifact_uri"].startswith("mlflow-artifacts:/")
    assert sha256_file(out / "model.onnx") == sha256_file(source / "model.onnx")
    assert {"MLmodel", "model.onnx", "manifest.json"} <= {p.name for p in out.iterdir()}
    assert load_bundle(out).threshold == 2.5
    assert run_cli("verify", str(out)).returncode == 0
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_pull_by_version_from_env_replaces_an_existing_bundle(
    mlflow_server, registered, tmp_path, monkeypatch
):
    name, version, _ = registered
    out = make_bundle(tmp_path / "bundle", threshold=9.0)  # an older bundle already in place
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    info = pull(f"models:/{name}/{version}", out)
    assert info["version"] == version
    assert load_bundle(out).threshold == 2.5


def test_pull_refuses_an_out_folder_holding_user_files(mlflow_server, registered, tmp_path):
    name, _, _ = registered
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    result = run_cli("pull", "--model-uri", f"models:/{name}@champion", "--out", str(out),
                     "--tracking-uri", mlflow_server)  # fmt: skip
    assert result.returncode == 1 and "not a bundle" in result.stderr
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_pull_errors_are_clear(mlflow_server, registered, tmp_path):
    name, _, _ = registered
    with pytest.raises(PullError, match="alias nope not found"):
        pull(f"models:/{name}@nope", tmp_path / "x", tracking_uri=mlflow_server)
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PullError, match=r"cannot reach http://127\.0\.0\.1:\d+/api/2\.0/mlflow"):
        pull(f"models:/{name}@champion", tmp_path / "x", tracking_uri=dead, retries=1)
    with pytest.raises(PullError, match="models:/NAME@ALIAS"):
        parse_model_uri("runs:/abc/bundle")
    assert not (tmp_path / "x").exists()


def test_local_artifact_uri_is_copied_only_when_allowed(tmp_path):
    source = make_bundle(tmp_path / "src")
    client = RestClient("http://127.0.0.1:9")  # never contacted for local URIs
    for uri in (source.as_uri(), str(source)):
        dest = tmp_path / f"dest{len(list(tmp_path.iterdir()))}"
        dest.mkdir()
        with pytest.raises(PullError, match="local path; refusing it"):
            fetch_artifacts(client, uri, dest)
        assert list(dest.iterdir()) == []
        fetch_artifacts(client, uri, dest, allow_local=True)
        assert load_bundle(dest).model_sha256 == sha256_file(source / "model.onnx")
    with pytest.raises(PullError, match="scheme 's3'"):
        fetch_artifacts(client, "s3://bucket/bundle", tmp_path)
