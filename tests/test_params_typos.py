"""Typos in --set, params files and profiles are refused with the closest valid key, and a
bad value is blamed on the layer that set it (not on the embedded defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from granvae.cli import app
from granvae.config import SettingsError, load_settings
from pipelines.config import load_run_config

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_set_typo_names_the_set_item_and_the_closest_key() -> None:
    with pytest.raises(SettingsError) as err:
        load_run_config(PARAMS, "quick", sets=["tiling.tiel=64"])
    assert str(err.value).startswith("--set tiling.tiel=64: tiling.tiel: unknown key")
    assert "did you mean 'tile'?" in str(err.value)


def test_file_typos_name_the_file(tmp_path) -> None:
    inner = _file(tmp_path, "train: {epoch: 5}\n")
    with pytest.raises(SettingsError, match=r"params.yaml: train.epoch: .*did you mean 'epochs'"):
        load_settings(inner)
    section = _file(tmp_path, "tilling: {tile: 32}\n")
    with pytest.raises(SettingsError, match=r"tilling: unknown key; did you mean 'tiling'"):
        load_run_config(section)
    assert str(section) in _message(lambda: load_run_config(section))


def test_profile_typo_names_the_profile(tmp_path) -> None:
    bad = _file(tmp_path, "profiles:\n  fast: {train: {epoch: 1}}\n")
    message = _message(lambda: load_run_config(bad))  # checked even when not selected
    assert "profiles.fast: train.epoch: unknown key; did you mean 'epochs'?" in message


def test_pipeline_and_nested_sections_are_checked() -> None:
    message = _message(lambda: load_run_config(PARAMS, sets=["pipeline.work_dri=x"]))
    assert "--set pipeline.work_dri=x" in message and "'work_dir'" in message
    message = _message(lambda: load_settings(PARAMS, sets=["select.ranking.primery=elbo"]))
    assert "select.ranking.primery: unknown key; did you mean 'primary'?" in message
    message = _message(lambda: load_settings(PARAMS, sets=["tracking.model_nam=x"]))
    assert "did you mean 'model_name'?" in message


def test_type_errors_are_blamed_on_their_source(tmp_path) -> None:
    message = _message(lambda: load_run_config(PARAMS, "quick", sets=["train.epochs=five"]))
    assert message.startswith("--set train.epochs=five: train.epochs:")
    assert "embedded" not in message
    bad = _file(tmp_path, "train: {epochs: five}\n")
    assert _message(lambda: load_settings(bad)).startswith(f"{bad}: train.epochs:")
    gate = _message(lambda: load_settings(PARAMS, sets=["select.gates.recall_at_far.op=~"]))
    assert gate.startswith("--set select.gates.recall_at_far.op=~: select.gates.1.op")


def test_a_gate_is_changed_by_name() -> None:
    settings = load_settings(PARAMS, sets=["select.gates.latency_p95_b1_ms=500"])
    embedded = yaml.safe_load(PARAMS.read_text())["select"]["gates"]
    gates = settings.select["gates"]
    assert [g["metric"] for g in gates] == [g["metric"] for g in embedded]  # none lost
    latency = next(g for g in gates if g["metric"] == "latency_p95_b1_ms")
    assert latency["value"] == 500 and latency["op"] == "<="
    others = [g for g in gates if g["metric"] != "latency_p95_b1_ms"]
    assert others == [g for g in embedded if g["metric"] != "latency_p95_b1_ms"]
    message = _message(lambda: load_settings(PARAMS, sets=["select.gates.latency_p59_b1_ms=5"]))
    assert "no such gate; did you mean 'latency_p95_b1_ms'?" in message


def test_every_params_command_takes_set_and_refuses_typos(tmp_path) -> None:
    runner = CliRunner()
    for args in (
        ["train", "--data", str(tmp_path), "--out", str(tmp_path / "o")],
        ["sweep", "--data", str(tmp_path), "--out", str(tmp_path / "o")],
        ["export", str(tmp_path), "--out", str(tmp_path / "b")],
        ["register", str(tmp_path)],
        ["models"],
        ["retrain"],
    ):
        result = runner.invoke(app, [*args, "--set", "train.epoch=1"])
        assert result.exit_code == 2, (args, result.output)
        assert "did you mean 'epochs'" in result.output, (args, result.output)


def _message(call) -> str:
    with pytest.raises(SettingsError) as err:
        call()
    return str(err.value)


def test_a_lines_section_is_accepted_and_its_typos_are_refused_by_the_line(tmp_path) -> None:
    """`lines:` (one entry per product line, granvae.lines) is a known section: a stack's
    two-line params file loads; a typo inside a line's entry is refused when it resolves."""
    from granvae.lines import LineError, resolve_line

    good = _file(tmp_path, "lines:\n  press-7: {cron: '0 2 * * *'}\n")
    assert load_run_config(good) is not None
    tree = yaml.safe_load(good.read_text())
    assert resolve_line(tree, "press-7").cron == "0 2 * * *"
    tree["lines"]["press-7"]["corn"] = "x"
    with pytest.raises(LineError, match=r"lines.press-7: unknown key\(s\) \['corn'\]"):
        resolve_line(tree, "press-7")
