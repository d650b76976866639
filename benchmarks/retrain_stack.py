"""`benchmarks/retrain.py --stack`: the same profile as a deployment run by the stack's worker.

Starts a stack in a scratch folder (or uses a running one, `--stack-root`), deploys the
retrain flow with the scratch data repository, S3 DVC remote and work folder, triggers one
run and times it from the trigger to the final state, reading the sweep's span from the
`candidate` task runs in the Prefect API. Printed beside the embedded run of the same
profile, the difference is what the services cost (target <= 20% of the stack's total).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from granvae.stack import StackSettings, down, up
from granvae.stack.config import StackState, load_state

ROOT = Path(__file__).resolve().parents[1]


def _sweep_span(api: str, flow_started: float) -> float:
    """Wall seconds from the first candidate's start to the last one's end."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="candidate"))
        )
    runs = [r for r in runs if r.start_time and r.end_time
            and r.start_time.timestamp() >= flow_started - 1]  # fmt: skip
    if not runs:
        return float("nan")
    return max(r.end_time.timestamp() for r in runs) - min(r.start_time.timestamp() for r in runs)


def run_on_stack(
    state: StackState, profile: str, scratch: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    """Deploy + run once; returns total and sweep seconds and the final state's name."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.deployment import deploy_retrain

    overrides = {"pipeline": {"data_repo": str(scratch / "stack-data-repo"),
                              "work_dir": str(scratch / "stack-work")}, **extra}  # fmt: skip
    dep = deploy_retrain(state, ROOT / "params.yaml", profile=profile, extra=overrides)
    started = time.time()
    with temporary_settings({PREFECT_API_URL: state.prefect_api}):
        run = run_deployment(dep["name"], timeout=0)
        with get_client(sync_client=True) as client:
            while not (final := client.read_flow_run(run.id).state).is_final():
                if time.time() - started > 3600:
                    raise TimeoutError("the stack run did not finish within an hour")
                time.sleep(2)
    total = time.time() - started
    return {"total": total, "sweep": _sweep_span(state.prefect_api, started),
            "state": final.name}  # fmt: skip


def stack_benchmark(
    profile: str, scratch: Path, stack_root: Path | None, extra: dict[str, Any]
) -> dict[str, Any]:
    """A fresh stack (stopped afterwards) unless `stack_root` holds a running one."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "granvae-bench")  # only the local moto S3
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "granvae-bench")
    if stack_root is not None:
        state = load_state(stack_root)
        if state is None:
            raise SystemExit(f"{stack_root}: no stack there (granvae stack up --root ...)")
        return {**run_on_stack(state, profile, scratch, extra), "startup": 0.0}
    folder = Path(tempfile.mkdtemp(prefix="granvae-bench-stack-", dir="/tmp"))
    os.chmod(folder, 0o711)  # the postgres user must enter it
    try:
        t0 = time.time()
        state = up(StackSettings(root=folder / "stack", project=ROOT))
        startup = time.time() - t0
        return {**run_on_stack(state, profile, scratch, extra), "startup": startup}
    finally:
        down(folder / "stack")
        shutil.rmtree(folder, ignore_errors=True)


def print_side_by_side(embedded: dict[str, float], stack: dict[str, Any]) -> None:
    rows = [("total wall (trigger to final state)", embedded["total"], stack["total"]),
            ("sweep (train+evaluate)", embedded["sweep"], stack["sweep"]),
            ("outside training", embedded["total"] - embedded["sweep"],
             stack["total"] - stack["sweep"])]  # fmt: skip
    print(f"\n{'':40s} {'embedded':>10s} {'stack':>10s}")
    for name, a, b in rows:
        print(f"{name:40s} {a:10.1f} {b:10.1f}")
    extra = stack["total"] - embedded["total"]
    print(f"stack run state: {stack['state']}; stack start-up (not in the run): "
          f"{stack['startup']:.1f} s")  # fmt: skip
    print(f"services overhead: {extra:.1f} s = {100 * extra / stack['total']:.1f}% of the "
          "stack run (target <= 20%)")  # fmt: skip
