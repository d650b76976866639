"""`export --candidate` refuses a gate-failing model unless --force; a gate can be raised
by name for it; a missing sweep folder is named, not a raw errno."""

from __future__ import annotations

from sweep_fixtures import candidate_row, make_sweep
from typer.testing import CliRunner

from granvae.cli import app


def test_export_candidate_refuses_a_gate_failing_model(tmp_path) -> None:
    rows = [candidate_row(1, recall=0.8, elbo=-110.0, latency=80.0),  # too slow for the gate
            candidate_row(2, recall=0.83, elbo=-120.0)]  # fmt: skip
    sweep = make_sweep(tmp_path / "sweep", rows, report=False)
    runner, out = CliRunner(), str(tmp_path / "bundle")
    slow = rows[0]["candidate_id"]

    refused = runner.invoke(app, ["export", str(sweep), "--out", out, "--candidate", slow])
    assert refused.exit_code == 2, refused.output
    text = " ".join(refused.output.split())
    assert f"candidate {slow} fails the gates (latency_p95_b1_ms <= 50)" in text
    assert "--force" in text and not (tmp_path / "bundle").exists()

    forced = runner.invoke(app, ["export", str(sweep), "--out", out, "--candidate", slow,
                                 "--force"])  # fmt: skip
    assert "WARNING: candidate" in forced.output and "exporting anyway" in forced.output
    raised = runner.invoke(app, ["export", str(sweep), "--out", out, "--candidate", slow,
                                 "--set", "select.gates.latency_p95_b1_ms=100"])  # fmt: skip
    assert "fails the gates" not in raised.output  # the gate raised by name lets it through


def test_export_of_a_missing_folder_names_it(tmp_path) -> None:
    result = CliRunner().invoke(app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "nope: no results.json here" in result.output and "Errno" not in result.output
