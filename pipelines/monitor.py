"""The monitor flow: read a line's landing zone, run granvae's monitor, trigger a retrain.

Orchestration only: every statistic comes from granvae.monitor; this flow reads, logs the
report as a Prefect artifact and, when the monitor fired and a retrain deployment is named
(`retrain-<line>` from `granvae stack deploy`), starts that deployment. With `ingest_into`
(the MVTec-style folder the retrain reads) the landing zone is first ingested there
(granvae.data.line_landing: goods to train, confirmed defects to test/<class>, each image's
origin kept), and the triggered run's `overrides` point `pipeline.landing` at it; the
deployment's own overrides (the line's model, data repository, remote) are merged under, not
replaced. The reasons are the triggered run's `trigger` parameter (`monitor: <reasons>`),
which the retrain records as the tag `granvae.trigger` on its MLflow runs and on the version it
registers (pipelines.trigger), and its tags (`monitor`, `monitor:<test>`). One firing starts
one run: the idempotency key is the deployment, the model and the part the CUSUM fired at
(window tests alone: the tests that fired and the UTC day), so the next scheduled pass over
the same drift returns the same run. Schedule it per line like any flow
(`monitor_line.serve(cron=...)`).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from granvae.config import merge
from granvae.data.line_landing import ingest_landing
from granvae.monitor.records import read_feedback, read_stream
from granvae.monitor.report import MonitorConfig, run_monitor
from pipelines.trigger import from_monitor


@task(name="ingest-line", cache_policy=NO_CACHE)
def ingest_line(landing: str, into: str, frame_hw: list[int] | None) -> dict[str, Any]:
    """The landing zone's usable images into the retrain's landing folder, with origins."""
    hw = (int(frame_hw[0]), int(frame_hw[1])) if frame_hw else None
    return ingest_landing(landing, into, expect_hw=hw)


def _trigger(deployment: str, report: dict[str, Any], model: str | None,
             ingest_into: str | None) -> Any:  # fmt: skip
    """Start the retrain deployment once per firing; returns the flow run."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    with get_client(sync_client=True) as client:
        deployed = client.read_deployment_by_name(deployment).parameters or {}
    overrides = dict(deployed.get("overrides") or {})
    if ingest_into:
        overrides = merge(overrides, {"pipeline": {"landing": ingest_into}})
    tests = sorted({r.split(":", 1)[0] for r in report["reasons"]})
    # The CUSUM's firing part names one drift; window tests alone have no such point, so
    # they start at most one run per model, set of tests and UTC day.
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    fired_at = report["cusum"].get("fired_at_item") or f"{','.join(tests)}@{day}"
    return run_deployment(
        deployment, timeout=0,
        parameters={"overrides": overrides, "trigger": from_monitor(report["reasons"])},
        tags=["granvae", "monitor", *(f"monitor:{t}" for t in tests)],
        idempotency_key=f"line-monitor:{deployment}:{model}:{fired_at}",
    )  # fmt: skip


@flow(name="line-monitor")
def monitor_line(
    landing: str,
    groups: list[list[int]] | None = None,
    baseline: int = 1000,
    window: int = 500,
    false_alarm_rate: float = 0.01,
    retrain_deployment: str | None = None,
    ingest_into: str | None = None,
    frame_hw: list[int] | None = None,
) -> dict[str, Any]:
    """One monitor pass; returns the report (the ingest counts and the triggered run's id,
    if it fired with a deployment named)."""
    log = get_run_logger()
    cfg = MonitorConfig(false_alarm_rate=false_alarm_rate, baseline=baseline, window=window)
    stream = read_stream(landing)
    report = run_monitor(stream, groups, cfg, read_feedback(landing)).to_json()
    reasons = report["reasons"]
    create_markdown_artifact(
        key="line-monitor",
        markdown="\n".join(["# line monitor", f"landing: `{landing}`", ""]
                           + ([f"- ALERT {r}" for r in reasons] or ["quiet"])),
        description="granvae monitor report",
    )  # fmt: skip
    log.info("monitor %s: %s", "FIRED" if reasons else "quiet", json.dumps(reasons))
    if reasons and retrain_deployment:
        if ingest_into:
            report["ingested"] = ingest_line(landing, ingest_into, frame_hw)
            log.info("ingested into %s: %s", ingest_into, json.dumps(report["ingested"]))
        run = _trigger(retrain_deployment, report, stream.model_sha256, ingest_into)
        report["retrain_run_id"] = str(run.id)
        log.info("started %s: flow run %s", retrain_deployment, run.id)
    return report
