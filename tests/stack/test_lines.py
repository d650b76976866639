"""Product lines and the stack's refusals: pure functions and CLI errors, no services."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from granvae.cli import app
from granvae.lines import LineError, resolve_line

PARAMS = {
    "tracking": {"model_name": "inspector", "experiment": "plant"},
    "pipeline": {"remote": "s3://bucket/dvc/", "landing": "/mnt/landing"},
    "lines": {"press-9": {"model_name": "p9", "cron": "30 2 * * *", "remote": "s3://other/p9"}},
}


def test_a_line_derives_its_own_model_data_remote_and_landing() -> None:
    line = resolve_line(PARAMS, "press-7")
    assert line.model_name == "inspector-press-7" and line.experiment == "plant-press-7"
    assert line.data_repo == "lines/press-7/data-repo" and line.work_dir == "lines/press-7/work"
    assert line.remote == "s3://bucket/dvc/press-7" and line.landing == "/mnt/landing/press-7"
    assert line.cron is None
    over = line.overrides()
    assert over["tracking"]["model_name"] == "inspector-press-7"
    assert over["pipeline"]["remote"] == "s3://bucket/dvc/press-7"


def test_params_entries_override_the_derived_values() -> None:
    line = resolve_line(PARAMS, "press-9", remote_root="s3://stack/dvc")
    assert (line.model_name, line.cron, line.remote) == ("p9", "30 2 * * *", "s3://other/p9")
    assert resolve_line(PARAMS, "press-7", remote_root="s3://stack/dvc").remote == (
        "s3://stack/dvc/press-7"
    )


@pytest.mark.parametrize("name", ["", "Press 7", "../up", "a" * 41, "-lead"])
def test_bad_line_names_are_refused_with_the_name(name: str) -> None:
    with pytest.raises(LineError, match="line "):
        resolve_line(PARAMS, name)


def test_unknown_line_keys_are_named() -> None:
    with pytest.raises(LineError, match=r"lines.press-7: unknown key\(s\) \['crn'\]"):
        resolve_line({"lines": {"press-7": {"crn": "0 2 * * *"}}}, "press-7")


def test_stack_up_on_a_real_endpoint_without_credentials_starts_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    """A real S3 endpoint's keys come from the caller's environment (the local S3 server
    checks keys the stack generates per role, so it needs none)."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    result = CliRunner().invoke(app, ["stack", "up", "--root", str(tmp_path / "stack"),
                                      "--s3-endpoint", "http://s3.plant.example:9000"])  # fmt: skip
    assert result.exit_code == 2
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not set" in result.output
    assert not (tmp_path / "stack").exists()  # no folder, no process, no state


def test_stack_status_and_env_without_a_stack(tmp_path: Path) -> None:
    runner = CliRunner()
    status = runner.invoke(app, ["stack", "status", "--root", str(tmp_path)])
    assert status.exit_code == 1 and "no stack in" in status.output
    env = runner.invoke(app, ["stack", "env", "--root", str(tmp_path)])
    assert env.exit_code == 2 and "granvae stack up" in env.output


def test_stack_env_prints_the_prefect_secret_only_when_asked(tmp_path: Path) -> None:
    import stat

    from granvae.stack.config import StackState

    state = StackState(root=str(tmp_path), project=".", bucket="b", pool="p", region="r",
                       pg_user="u", pg_password="pg-secret", ports={"mlflow": 1, "prefect": 2},
                       prefect_auth="granvae:prefect-secret")  # fmt: skip
    state.save()
    assert stat.S_IMODE((tmp_path / "stack.json").stat().st_mode) == 0o600
    runner = CliRunner()
    plain = runner.invoke(app, ["stack", "env", "--root", str(tmp_path)])
    assert plain.exit_code == 0 and "secret" not in plain.output
    asked = runner.invoke(app, ["stack", "env", "--root", str(tmp_path), "--prefect-auth"])
    assert "export PREFECT_API_AUTH_STRING=granvae:prefect-secret" in asked.output
    assert "pg-secret" not in asked.output
