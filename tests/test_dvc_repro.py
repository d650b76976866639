"""`dvc repro` on a fresh clone rebuilds the model from the committed snapshot, no Prefect.

The snapshot is versioned exactly as the flow does it (pipelines.versioning: git init,
dvc init, local remote, dvc add, commit, push). A second folder then clones the repo,
pulls the data, shrinks the sweep in params.yaml and reproduces every stage.
"""

from __future__ import annotations

import json

import pytest
import yaml
from pipeline_fixtures import dvc, git, make_project, tiny_params

from granvae.data import check_dataset, generate, write_dataset
from pipelines import versioning

pytestmark = pytest.mark.slow




def test_dvc_repro_on_a_fresh_clone(tmp_path) -> None:
    params = tiny_params(tmp_path, "sqlite:///unused.db")
    project = make_project(tmp_path, params)
    splits, meta = generate("surfaces", 128, 100, 64, 0, image_size=32)
    write_dataset(tmp_path / "staging", splits, meta)
    snap = versioning.version_snapshot(tmp_path / "staging", project, "data/snapshot", None)
    git(project, "add", "dvc.yaml", "params.yaml")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pipeline")

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    assert not (clone / "data" / "snapshot").exists()
    dvc(clone, "pull", "-q", "data/snapshot.dvc")  # the data; stage outputs get rebuilt
    assert check_dataset(clone / "data" / "snapshot")["splits"]  # hashes verified

    tiny = yaml.safe_load((clone / "params.yaml").read_text())
    tiny["sweep"]["granularities"] = [2]  # the params override: one candidate
    (clone / "params.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    dvc(clone, "repro")

    out = clone / "runs" / "dvc"
    prepared = json.loads((out / "prepare.json").read_text())
    assert prepared["data_version"] == snap.data_version
    assert (out / "bundle" / "model.onnx").exists()
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["data_version"] == snap.data_version
    assert json.loads((out / "decision" / "winner.json").read_text())["winner"] == "g2-b4-d4-s0"
    metrics = json.loads(dvc(clone, "metrics", "show", "--json"))
    assert "runs/dvc/metrics.json" in json.dumps(metrics)
    assert "n_finished" in json.dumps(metrics)
    dvc(clone, "plots", "show", "-o", str(tmp_path / "plots"))
    assert (tmp_path / "plots" / "index.html").exists()
    assert "up to date" in dvc(clone, "status")  # nothing left to reproduce
