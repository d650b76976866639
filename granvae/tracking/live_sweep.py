"""A sweep candidate trained inside its live MLflow run: one place for `retrain` and
`granvae sweep --track`.

Both used to differ: the retrain flow opened each candidate's run when its training
started and logged every epoch (granvae.tracking.live), while `sweep --track` logged the
whole sweep only after the last candidate finished, so its runs had no curves while they
trained. `tracked_candidate` is a module-level function, so a sweep's worker processes
(spawned, not forked) can run it; the run it opens carries the sweep id from sweep.json,
which is how granvae.tracking.runs.log_sweep later finds and completes the same run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from granvae.config import Settings
from granvae.sweep import SWEEP_FILE, Candidate, candidate_row, run_candidate
from granvae.tracking.live import LiveRun, live_run
from granvae.tracking.runs import candidate_params
from granvae.tracking.store import TrackingSettings


@contextlib.contextmanager
def candidate_live_run(
    candidate: Candidate, settings: Settings, sweep_dir: Path | str, data_version: str | None
) -> Iterator[LiveRun | None]:
    """The candidate's live run, or None when `tracking.live` is off. Needs sweep.json
    (granvae.sweep.begin_sweep writes it before any candidate starts)."""
    tracking = TrackingSettings.model_validate(settings.tracking)
    if not tracking.live:
        yield None
        return
    meta = json.loads((Path(sweep_dir) / SWEEP_FILE).read_text())
    sweep_id = str(meta.get("sweep_id") or meta.get("id"))
    row = candidate_row(candidate, settings, "running", None)
    params = candidate_params(row, meta.get("data_version") or data_version)
    with live_run(tracking, sweep_id, candidate.candidate_id, params) as live:
        yield live


def tracked_candidate(
    c: Candidate,
    settings: Settings,
    data_dir: Path,
    out_dir: Path,
    progress: bool = False,
    threads: int | None = None,
    data_version: str | None = None,
) -> dict:
    """granvae.sweep.run_candidate with its curves logged live; same arguments, same row.

    The run ends FINISHED or FAILED as the row's status says (with its reason)."""
    with candidate_live_run(c, settings, out_dir, data_version) as live:
        hooks = {"on_start": live.on_start, "on_epoch": live.on_epoch} if live else {}
        row = run_candidate(c, settings, data_dir, out_dir, progress, threads, **hooks)
        if live:
            live.outcome, live.reason = row["status"], row.get("reason")
    return row
