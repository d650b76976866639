"""The monitor flow: read a line's landing zone, run granvae's monitor, trigger a retrain.

Orchestration only: every statistic comes from granvae.monitor; this flow reads, logs the
report as a Prefect artifact and, when the monitor fired and a retrain deployment is named
(`retrain-<line>` from `granvae stack deploy`), starts that deployment with its own parameters
(the line's overrides stay as deployed) and the reasons as tags of the triggered run
(`monitor`, `monitor:<test>`). Not yet done: copying the reason onto the MLflow run and the
registered version. Schedule it per line like any flow (`monitor_line.serve(cron=...)`).
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from granvae.monitor.records import read_feedback, read_stream
from granvae.monitor.report import MonitorConfig, run_monitor


@flow(name="line-monitor")
def monitor_line(
    landing: str,
    groups: list[list[int]] | None = None,
    baseline: int = 1000,
    window: int = 500,
    false_alarm_rate: float = 0.01,
    retrain_deployment: str | None = None,
) -> dict[str, Any]:
    """One monitor pass; returns the report (and the triggered run's id, if any)."""
    log = get_run_logger()
    cfg = MonitorConfig(false_alarm_rate=false_alarm_rate, baseline=baseline, window=window)
    report = run_monitor(read_stream(landing), groups, cfg, read_feedback(landing)).to_json()
    reasons = report["reasons"]
    create_markdown_artifact(
        key="line-monitor",
        markdown="\n".join(["# line monitor", f"landing: `{landing}`", ""]
                           + ([f"- ALERT {r}" for r in reasons] or ["quiet"])),
        description="granvae monitor report",
    )  # fmt: skip
    log.info("monitor %s: %s", "FIRED" if reasons else "quiet", json.dumps(reasons))
    if reasons and retrain_deployment:
        from prefect.deployments import run_deployment

        tests = sorted({r.split(":", 1)[0] for r in reasons})
        run = run_deployment(
            retrain_deployment, timeout=0,
            tags=["granvae", "monitor", *(f"monitor:{t}" for t in tests)],
        )  # fmt: skip
        report["retrain_run_id"] = str(run.id)
        log.info("started %s: flow run %s", retrain_deployment, run.id)
    return report
