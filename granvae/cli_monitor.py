"""`granvae monitor`: test a line's shipped records for drift and say which factor moved.

Exit codes: 0 nothing fired; 1 the monitor fired (the reasons are printed); 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def _groups(groups: str | None, bundle: Path | None) -> list[list[int]] | None:
    """Latent groups from --groups "0,1;2,3" or from the bundle's manifest."""
    if groups:
        try:
            return [[int(d) for d in part.split(",")] for part in groups.split(";")]
        except ValueError as exc:
            raise ValueError(f"--groups: expected e.g. '0,1;2,3', got {groups!r}") from exc
    if bundle is not None:
        path = bundle / "manifest.json"
        try:
            return json.loads(path.read_text())["groups"]
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise ValueError(f"{path}: no latent groups ({exc})") from exc
    return None


def monitor_cmd(
    landing: Annotated[Path, typer.Argument(help="landing zone that granvae-edge ship fills")],
    bundle: Annotated[Path | None, typer.Option(help="the served bundle (latent groups)")] = None,
    groups: Annotated[str | None, typer.Option(help="latent groups, e.g. '0,1;2,3'")] = None,
    baseline: Annotated[int, typer.Option(help="first inspections taken as reference")] = 1000,
    window: Annotated[int, typer.Option(help="latest inspections the window tests use")] = 500,
    false_alarm_rate: Annotated[float, typer.Option(help="calibrated rate p0")] = 0.01,
    drifted_rate: Annotated[float, typer.Option(help="rate p1 the CUSUM is tuned to")] = 0.05,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
) -> None:
    """Alarm-rate CUSUM, pass-score shift, invalid and confirmed false-alarm rates, and the
    latent group that moved (docs/line-loop.md)."""
    from granvae.monitor.records import RecordsError, read_feedback, read_stream
    from granvae.monitor.report import MonitorConfig, run_monitor

    try:
        cfg = MonitorConfig(false_alarm_rate=false_alarm_rate, drifted_rate=drifted_rate,
                            baseline=baseline, window=window)  # fmt: skip
        stream = read_stream(landing)
        report = run_monitor(stream, _groups(groups, bundle), cfg, read_feedback(landing))
    except (RecordsError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(code=2) from exc
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_json(), indent=2))
    c = report.cusum
    print(f"{landing}: model {stream.model_sha256}, {report.n_baseline} reference + "
          f"{report.n_tested} tested inspections; CUSUM h={c['h']} "
          f"({c['false_triggers_per_100k']:.2f} false triggers per 100,000 parts, "
          f"mean delay {c['arl1']:.0f} parts at {drifted_rate:g})")  # fmt: skip
    for reason in report.reasons:
        print(f"ALERT {reason}")
    if not report.fired:
        print("quiet: no test fired")
    raise typer.Exit(code=1 if report.fired else 0)


def ingest_line_cmd(
    landing: Annotated[Path, typer.Argument(help="landing zone that granvae-edge ship fills")],
    into: Annotated[Path, typer.Option(help="MVTec-style folder that retrain --landing reads")],
    height: Annotated[int | None, typer.Option(help="frame contract: image height")] = None,
    width: Annotated[int | None, typer.Option(help="frame contract: image width")] = None,
    eval_good_share: Annotated[float, typer.Option(help="share of goods kept for test")] = 0.2,
) -> None:
    """Add a line's shipped images to a landing folder: goods to train, operator-confirmed
    defects to test/<class>, the rest kept out with counts (docs/line-loop.md)."""
    from granvae.data.line_landing import ingest_landing

    hw = (height, width) if height and width else None
    try:
        counts = ingest_landing(landing, into, expect_hw=hw, eval_good_share=eval_good_share)
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(code=2) from exc
    print(json.dumps(counts))


def add_commands(app: typer.Typer) -> None:
    app.command("monitor")(monitor_cmd)
    app.command("ingest-line")(ingest_line_cmd)
