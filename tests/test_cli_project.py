"""Which project and store a command uses: found walking up from the working folder,
announced, never a new empty store made silently; `granvae ui` refuses a busy port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from granvae.cli import app


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder with its own params.yaml (a model name) and an embedded store."""
    from granvae.tracking import Store, TrackingSettings

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "line-a"
    (root / "runs" / "notebooks").mkdir(parents=True)
    params = {"tracking": {"model_name": "line-a-inspector", "experiment": "line-a"}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    store = Store(TrackingSettings(workdir=root))
    found = store.client.get_experiment(store.experiment_id("line-a"))  # creates mlflow.db
    assert (root / "mlflow.db").is_file()
    # MLflow's UI opens this experiment on its runs, not on the GenAI traces overview
    assert found.tags["mlflow.experimentKind"] == "custom_model_development"
    return root


def test_models_from_a_subfolder_uses_the_projects_params_and_store(project, monkeypatch):
    sub = project / "runs" / "notebooks"
    monkeypatch.chdir(sub)
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "line-a-inspector (0 versions)" in result.output  # the project's params.yaml
    assert f"store: sqlite:///{project / 'mlflow.db'} (project {project})" in result.output
    assert not (sub / "mlflow.db").exists()


def test_models_outside_any_project_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 2
    assert "no granvae project here: looked for params.yaml / .granvae / mlflow.db in" in (
        result.output
    )
    assert str(empty) in result.output and "MLFLOW_TRACKING_URI" in result.output
    assert list(empty.iterdir()) == []  # no mlflow.db, nothing else


def test_ui_refuses_a_busy_port(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "mlflow.db").touch()  # a project with a store (never opened: refused first)
    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["ui", "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"port {port} on 127.0.0.1 is busy" in result.output
    assert "MLflow UI on" not in result.output  # no success line before the refusal


def test_retrain_from_a_subfolder_runs_in_the_project(tmp_path, monkeypatch, capsys):
    from pipelines.cli import enter_project

    root = tmp_path / "line-b"
    sub = root / "notes"
    sub.mkdir(parents=True)
    (root / "params.yaml").write_text("train: {epochs: 3}\n")
    monkeypatch.chdir(sub)
    params, landing, repo = enter_project("mine.yaml", None, "../repo")
    assert Path.cwd() == root.resolve()  # work folder, store, data repo: the project's
    assert (params, landing, repo) == (str(sub / "mine.yaml"), None, str(root / "repo"))
    assert f"project: {root}" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # outside any project: stays where it is
    assert enter_project("x.yaml") == ["x.yaml"] and Path.cwd() == tmp_path
