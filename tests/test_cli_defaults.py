"""One source of defaults for every command, from any folder; CLI errors are one line.

The embedded params.yaml (shipped in the package) is what a folder without params.yaml
gets; a params.yaml in the working folder overrides it for `train`, `sweep`, `retrain`
alike. Bad options end in one `error:` line and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from granvae.cli import app
from granvae.config import EMBEDDED_PARAMS, load_settings
from granvae.data import generate, write_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    splits, meta = generate("surfaces", 64, 8, 8, 0, image_size=16)
    write_dataset(tmp_path / "data", splits, meta)
    return tmp_path / "data"


def _train(folder: Path, data: Path, out: str) -> dict:
    result = CliRunner().invoke(
        app, ["train", "--data", str(data), "--out", str(folder / out), "--epochs", "1"]
    )
    assert result.exit_code == 0, result.output
    return json.loads((folder / out / "model" / "config.json").read_text())


def test_embedded_defaults_are_the_project_params():
    assert EMBEDDED_PARAMS.is_file()
    assert yaml.safe_load(EMBEDDED_PARAMS.read_text()) == yaml.safe_load(
        (ROOT / "params.yaml").read_text()
    )


def test_train_reads_the_same_params_as_sweep_with_and_without_a_local_file(
    tmp_path, tiny_data, monkeypatch
):
    bare = tmp_path / "bare"
    bare.mkdir()
    monkeypatch.chdir(bare)  # no params.yaml here: the embedded defaults
    sweep_model = load_settings().model
    got = _train(bare, tiny_data, "run")
    assert got["likelihood"] == sweep_model.likelihood == "gaussian"
    assert (got["obs_std"], got["hidden"], got["arch"]) == (
        sweep_model.obs_std, sweep_model.hidden, sweep_model.arch,
    )  # fmt: skip

    local = tmp_path / "local"
    local.mkdir()
    monkeypatch.chdir(local)
    (local / "params.yaml").write_text(
        yaml.safe_dump({"model": {"likelihood": "bernoulli", "hidden": 32, "arch": "mlp"}})
    )
    sweep_model = load_settings().model
    got = _train(local, tiny_data, "run")
    assert (got["likelihood"], got["hidden"], got["arch"]) == ("bernoulli", 32, "mlp")
    assert got["likelihood"] == sweep_model.likelihood and got["hidden"] == sweep_model.hidden
    assert sweep_model.obs_std == load_settings(EMBEDDED_PARAMS).model.obs_std  # key by key


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["retrain", "--profile", "nope"], "no profile 'nope'; known: ['full', 'quick']"),
        (["retrain", "--set", "train.epochs"], "--set expects key.path=value"),
        (["schedule", "--set", "pipeline.retries=-1"], "pipeline.retries"),
        (["retrain", "--params", "missing.yaml"], "missing.yaml: params file not found"),
        (["export", ".", "--out", "b"], "results"),
    ],
)
def test_cli_errors_are_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert text.startswith("error:") and message in text, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(
        result.exception, SystemExit
    )
