"""Retrain's progress bar: candidates x epochs with an estimate of the time left.

Candidates train in worker processes (or on a Dask cluster), so the bar lives in the CLI
process and reads the sweep folder: each candidate's progress.json (epochs done, written
every epoch by granvae.sweep) and evaluation.json (done). Epochs are a cap (early
stopping may end a candidate sooner), so an evaluated candidate counts all its epochs and
the estimate errs long, never short. Reading files keeps pipelines/ out of the numbers.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from granvae.evaluate import read_evaluation
from granvae.sweep import CANDIDATES, PROGRESS_FILE, SWEEP_FILE
from pipelines.interrupt import CLEANUPS


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def current_sweep(work_dir: Path, since: float) -> Path | None:
    """The sweep folder this run started or resumed (sweep.json rewritten after `since`)."""
    found = [
        p for p in (work_dir / "sweeps").glob(f"*/{SWEEP_FILE}") if p.stat().st_mtime >= since
    ]
    return max(found, key=lambda p: p.stat().st_mtime).parent if found else None


def epochs_done(sweep_dir: Path) -> tuple[int, int, int, int]:
    """(epochs done, epochs planned, candidates evaluated, candidates) in a sweep folder."""
    meta = _json(sweep_dir / SWEEP_FILE)
    ids = meta.get("candidates") or []
    epochs = int(((meta.get("settings") or {}).get("train") or {}).get("epochs") or 1)
    done = evaluated = 0
    for cid in ids:
        cdir = sweep_dir / CANDIDATES / cid
        if read_evaluation(cdir) is not None:
            done, evaluated = done + epochs, evaluated + 1
        else:
            done += min(epochs, int(_json(cdir / PROGRESS_FILE).get("epoch") or 0))
    return done, epochs * len(ids), evaluated, len(ids)


@contextlib.contextmanager
def retrain_progress(work_dir: Path | str, period_s: float = 1.0) -> Iterator[None]:
    """Show the bar on stderr while the block runs (it appears once the sweep starts)."""
    work, since = Path(work_dir).resolve(), time.time() - 1
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]sweep[/bold] {task.fields[what]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} epochs"),
        TimeElapsedColumn(),
        TextColumn("left ~"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        redirect_stderr=False,
        redirect_stdout=False,
    )
    stop = threading.Event()

    def watch() -> None:
        task = None
        while not stop.wait(period_s):
            sweep = current_sweep(work, since)
            if sweep is None:
                continue
            done, total, evaluated, n = epochs_done(sweep)
            what = f"{evaluated}/{n} candidates evaluated"
            if task is None:
                bar.start()
                task = bar.add_task("sweep", total=total, completed=done, what=what)
                bar.reset(task, total=total, completed=done, what=what)  # no speed yet
            else:
                bar.update(task, total=total, completed=done, what=what)

    thread = threading.Thread(target=watch, name="retrain-progress", daemon=True)
    thread.start()
    CLEANUPS.append(bar.stop)  # Ctrl-C: leave the terminal tidy before the message
    try:
        yield
    finally:
        CLEANUPS.remove(bar.stop)
        stop.set()
        thread.join(timeout=2 * period_s + 1)
        bar.stop()
