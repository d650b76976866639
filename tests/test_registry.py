"""The registry against a real `mlflow server`: register, refuse, promote, roll back, pull."""

from __future__ import annotations

import json

import pytest
import typer
from edge_fixtures import make_bundle, sha256_file
from sweep_fixtures import candidate_row, fast_store, make_sweep, snapshot, unique
from typer.testing import CliRunner

from granvae.cli_tracking import add_commands
from granvae.select import SelectionPolicy, load_rows, select, write_decision
from granvae.tracking import (
    PromotionRefused,
    RegistrationRefused,
    history,
    list_versions,
    promote,
    register_winner,
    rollback,
)
from granvae.tracking.registry import COMPLETE, aliases, versions


def _register(tmp_path, store, name, sub, rows=None, data_version="manifest:aaaa", **kw) -> int:
    sweep = make_sweep(tmp_path / sub, rows=rows, sweep_id=sub, data_version=data_version)
    decision = select(load_rows(sweep))
    write_decision(decision, sweep)
    return register_winner(sweep, decision, name, store=store, experiment=name, **kw)


def test_winner_registered_with_challenger_tags_and_description(mlflow_server, tmp_path):
    store, name = fast_store(mlflow_server, tmp_path), unique("inspector")
    sweep = make_sweep(tmp_path / "sweep")
    decision = select(load_rows(sweep))
    write_decision(decision, sweep)
    version = register_winner(sweep, decision, name, store=store, git_commit="abc123")
    assert aliases(store, name) == {"challenger": version}
    mv = store.client.get_model_version(name, str(version))
    tags = mv.tags
    assert tags[COMPLETE] == "true" and tags["git_commit"] == "abc123"
    assert tags["granvae.candidate_id"] == "g2-b4-d4-s0"
    assert (tags["granularity"], tags["beta"], tags["latent_dim"]) == ("2", "4", "4")
    assert tags["data_version"] == "manifest:0123456789abcdef"
    assert float(tags["recall_at_far"]) == pytest.approx(0.83)
    assert decision.why in mv.description and "| **g2-b4-d4-s0** |" in mv.description
    files = {a.path for a in store.client.list_artifacts(mv.run_id, "torch_model")}
    assert {"torch_model/model.pt", "torch_model/config.json", "torch_model/MLmodel"} <= files
    mlmodel = store.client.download_artifacts(mv.run_id, "torch_model/MLmodel", str(tmp_path))
    assert "uint8" in open(mlmodel).read()  # the input signature
    again = register_winner(sweep, decision, name, store=store)
    assert again == version and len(versions(store, name)) == 1
    rows = list_versions(name, store=store)
    assert rows[0]["aliases"] == ["challenger"] and rows[0]["status"] == "complete"


def _winner_manifest(bundle):
    """The fixture bundle, relabelled as exported from the default sweep's winner."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["candidate"] = {"objective": "beta_stcvae", "granularity": 2, "beta": 4.0,
                             "latent_dim": 4, "seed": 0}  # fmt: skip
    path.write_text(json.dumps(manifest))


def test_bundle_version_is_what_the_edge_client_pulls(mlflow_server, tmp_path):
    from granvae_edge.pull import pull

    store, name = fast_store(mlflow_server, tmp_path), unique("edge")
    bundle = make_bundle(tmp_path / "bundle", height=16, width=16)
    with pytest.raises(RegistrationRefused, match="exported from another candidate"):
        _register(tmp_path, store, name, "other", bundle_dir=bundle)
    _winner_manifest(bundle)
    version = _register(tmp_path, store, name, "sweep", bundle_dir=bundle)
    got = pull(f"models:/{name}@challenger", tmp_path / "device", tracking_uri=mlflow_server)
    assert got["version"] == str(version)
    assert got["artifact_uri"].endswith("/artifacts/bundle")
    device = tmp_path / "device"
    assert sha256_file(device / "model.onnx") == sha256_file(bundle / "model.onnx")
    manifest = json.loads((device / "manifest.json").read_text())
    assert manifest["mlflow_model_uri"] == f"models:/{name}/{version}"
    assert "onnx" in (device / "MLmodel").read_text()


def test_promote_refuse_force_and_rollback_are_recorded(mlflow_server, tmp_path):
    store, name = fast_store(mlflow_server, tmp_path), unique("promo")
    v1 = _register(tmp_path, store, name, "a")  # recall 0.83
    first = promote(name, store=store, user="alice", reason="first model")
    assert (first.from_version, first.to_version) == (None, v1)
    assert aliases(store, name) == {"champion": v1}  # challenger consumed
    worse = [candidate_row(1, 0.75, -100.0), candidate_row(2, 0.70, -100.0)]
    v2 = _register(tmp_path, store, name, "b", rows=worse)
    with pytest.raises(PromotionRefused, match="worse than champion.*recall_at_far 0.75 < 0.83"):
        promote(name, store=store, user="bob")
    assert aliases(store, name) == {"champion": v1, "challenger": v2}
    forced = promote(name, force=True, store=store, user="bob", reason="line trial")
    assert forced.forced and aliases(store, name)["champion"] == v2
    strict = SelectionPolicy.model_validate(
        {"gates": [{"metric": "recall_at_far", "op": ">=", "value": 0.9}]}
    )
    with pytest.raises(PromotionRefused, match="fails the gates"):
        promote(name, version=v1, policy=strict, store=store)
    with pytest.raises(PromotionRefused, match="already champion"):
        promote(name, version=v2, store=store)
    back = rollback(name, user="carol", reason="scratches missed", store=store)
    assert (back.from_version, back.to_version) == (v2, v1)
    assert aliases(store, name)["champion"] == v1
    with pytest.raises(PromotionRefused, match="no previous champion"):
        rollback(name, store=store)
    moves = [
        (e["action"], e["from_version"], e["to_version"], e["by"])
        for e in history(name, store=store)
    ]
    assert moves == [
        ("promote", None, v1, "alice"),
        ("promote", v1, v2, "bob"),
        ("rollback", v2, v1, "carol"),
    ]
    assert history(name, store=store)[1]["forced"] is True
    assert history(name, store=store)[1]["metrics"]["recall_at_far"] == pytest.approx(0.75)
    mv1 = store.client.get_model_version(name, str(v1))
    assert mv1.tags["granvae.promoted_by"] == "carol"
    assert "rollback to champion by carol" in mv1.description
    assert "promote to champion by alice" in mv1.description


def test_other_data_without_an_evaluation_set_is_refused_unless_forced(mlflow_server, tmp_path):
    """No shared images to score both on (these fixture sweeps have no data): never a
    silent promotion across data versions (the old behaviour), only a recorded --force."""
    store, name = fast_store(mlflow_server, tmp_path), unique("data")
    _register(tmp_path, store, name, "a")
    promote(name, store=store)
    worse = [candidate_row(1, 0.5, -100.0)]
    v2 = _register(tmp_path, store, name, "b", rows=worse, data_version="manifest:bbbb")
    with pytest.raises(PromotionRefused, match="cannot be compared with champion version 1"):
        promote(name, store=store)
    rec = promote(name, store=store, force=True, reason="new line, no overlap")
    assert rec.to_version == v2 and rec.forced and "no evaluation set recorded" in rec.note


def test_failure_mid_registration_leaves_no_version_and_no_alias(mlflow_server, tmp_path):
    store, name = fast_store(mlflow_server, tmp_path), unique("atomic")
    sweep = make_sweep(tmp_path / "sweep")
    decision = select(load_rows(sweep))

    def crash(event: str) -> None:  # e.g. a disk or network fault once the version exists
        if event == "version_created":
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        register_winner(sweep, decision, name, store=store, progress=crash)
    assert versions(store, name) == [] and aliases(store, name) == {}
    bundle = make_bundle(tmp_path / "bundle", height=16, width=16)
    _winner_manifest(bundle)
    (bundle / "model.onnx").unlink()  # the bundle folder lost its model
    with pytest.raises(RegistrationRefused, match="lacks model.onnx"):
        register_winner(sweep, decision, name, bundle_dir=bundle, store=store)
    assert versions(store, name) == []
    version = register_winner(sweep, decision, name, store=store)
    assert [int(v.version) for v in versions(store, name)] == [version]
    assert aliases(store, name) == {"challenger": version}


def test_all_fail_registers_nothing_and_says_why(mlflow_server, tmp_path, monkeypatch):
    store, name = fast_store(mlflow_server, tmp_path), unique("allfail")
    rows = [candidate_row(1, 0.8, -100.0, latency=500.0), candidate_row(2, 0.0, 0.0, "failed")]
    sweep = make_sweep(tmp_path / "sweep", rows=rows)
    decision = select(load_rows(sweep))
    with pytest.raises(RegistrationRefused, match="latency_p95_b1_ms <= 50 failed for 2/2"):
        register_winner(sweep, decision, name, store=store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    app = typer.Typer()
    add_commands(app)
    before = snapshot(sweep)
    result = CliRunner().invoke(app, ["register", str(sweep), "--model-name", name])
    assert result.exit_code == 1, result.output
    assert "nothing registered: no candidate passed the gates" in " ".join(result.output.split())
    changed = set(snapshot(sweep)) - set(before)
    assert changed == {"decision.csv", "decision.md"}
    assert versions(store, name) == []


def test_cli_register_promote_models_rollback(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.chdir(tmp_path)  # no params.yaml here: every default applies
    name, runner = unique("cli"), CliRunner()
    app = typer.Typer()
    add_commands(app)
    sweep = make_sweep(tmp_path / "sweep")
    out = runner.invoke(app, ["register", str(sweep), "--model-name", name])
    assert out.exit_code == 0, out.output
    assert "version 1 with alias challenger" in out.output
    out = runner.invoke(app, ["promote", "--model-name", name, "--reason", "ok", "--user", "dee"])
    assert out.exit_code == 0 and "champion is now version 1" in out.output
    out = runner.invoke(app, ["models", "--model-name", name])
    assert out.exit_code == 0 and "champion" in out.output and "0.83" in out.output
    out = runner.invoke(app, ["rollback", "--model-name", name])
    assert out.exit_code == 2 and "no previous champion" in out.output


def test_previous_champion_walks_the_history_back():
    from granvae.tracking.promotion import previous_champion

    entries = [
        {"action": "promote", "from_version": None, "to_version": 1},
        {"action": "promote", "from_version": 1, "to_version": 2},
        {"action": "promote", "from_version": 2, "to_version": 3},
        {"action": "rollback", "from_version": 3, "to_version": 2},
    ]
    assert previous_champion(entries, 2) == 1  # a second rollback keeps walking back
    assert previous_champion(entries[:1], 1) is None
    assert previous_champion(entries, 5) == 2  # v5 was made champion in the UI
