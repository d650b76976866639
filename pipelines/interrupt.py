"""A first Ctrl-C stops a retrain within seconds, says what finished and how to resume.

Why not leave it to Prefect: Ctrl-C reaches the whole foreground process group, so the
temporary Prefect API server died at once while the flow ran on without it, finished its
candidates against a dead API, printed hundreds of connection tracebacks and ignored a
second Ctrl-C. Here the CLI process owns the interrupt: on the first SIGINT (or SIGTERM)
it stops every process it started (sweep workers, the temporary API server, a local Dask
cluster), reports the sweep's state from disk (the only state that survives) and exits
130. Nothing is lost that a rerun needs: evaluated candidates are kept and the others
continue from their last per-epoch checkpoint (granvae.train), which `resume_note` says.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import psutil

from granvae.evaluate import read_evaluation
from granvae.sweep import CANDIDATES, SWEEP_FILE
from granvae.train import CHECKPOINT_FILE

EXIT_INTERRUPTED = 130  # the shell's convention for a process ended by SIGINT
CLEANUPS: list[Callable[[], None]] = []  # run first on interrupt (e.g. stop a progress bar)


def stop_descendants(grace_s: float = 3.0) -> int:
    """Terminate every process below this one (then kill what outlives `grace_s`)."""
    try:
        kids = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for proc in kids:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(kids, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return len(kids)


def latest_sweep(work_dir: Path) -> Path | None:
    """The sweep folder this run wrote last (sweep folders are named by content hash)."""
    sweeps = [p for p in (work_dir / "sweeps").glob(f"*/{SWEEP_FILE}") if p.is_file()]
    return max(sweeps, key=lambda p: p.stat().st_mtime).parent if sweeps else None


def sweep_state(sweep_dir: Path) -> tuple[int, int, int]:
    """(evaluated, checkpointed but unfinished, total) candidates of a sweep folder."""
    try:
        ids = json.loads((sweep_dir / SWEEP_FILE).read_text()).get("candidates") or []
    except (OSError, ValueError):
        return 0, 0, 0
    done = partial = 0
    for cid in ids:
        cdir = sweep_dir / CANDIDATES / cid
        if read_evaluation(cdir) is not None:
            done += 1
        elif (cdir / CHECKPOINT_FILE).is_file():
            partial += 1
    return done, partial, len(ids)


def resume_note(sweep_dir: Path) -> str | None:
    """One line for a rerun that picks up an interrupted sweep; None for a fresh one."""
    done, partial, total = sweep_state(sweep_dir)
    if not done and not partial:
        return None
    return (
        f"resuming the sweep in {sweep_dir}: {done} of {total} candidates already "
        f"evaluated (kept), {partial} continue from their last epoch checkpoint"
    )


def _command_line() -> str:
    """The command the user typed, to rerun it (`granvae retrain ...`, not a venv path)."""
    args = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else ["granvae", "retrain"]
    if args[0] == "__main__.py":
        args[0] = "python -m pipelines"
    return " ".join(shlex.quote(a) for a in args)


def interrupted_message(work_dir: Path) -> str:
    """What finished and how to resume, read from the sweep folder on disk."""
    sweep = latest_sweep(work_dir)
    if sweep is None:
        state = "no candidate had started training"
    else:
        done, partial, total = sweep_state(sweep)
        state = (
            f"{done} of {total} candidates evaluated, {partial} with a checkpoint "
            f"(sweep folder {sweep})"
        )
    return (
        f"interrupted: the retrain stopped; {state}; nothing was registered by this run. "
        f"To resume, rerun: {_command_line()}"
    )


def _print_err(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def _hard_exit(_signum: int, _frame: FrameType | None) -> None:
    """A second Ctrl-C while stopping: stop now, kill what is left."""
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            proc.kill()
    os._exit(EXIT_INTERRUPTED)


def _on_interrupt(work_dir: Path) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, _hard_exit)
        signal.signal(signal.SIGTERM, _hard_exit)
        for cleanup in list(CLEANUPS):
            with contextlib.suppress(Exception):
                cleanup()
        _print_err(f"\n{signal.Signals(signum).name}: stopping workers and servers ...")
        stop_descendants()
        _print_err(interrupted_message(work_dir))
        # os._exit: Prefect's and the pool's exit hooks would wait on the processes and
        # the API just stopped (the 100-s hang); the state that matters is on disk.
        os._exit(EXIT_INTERRUPTED)

    return handler


@contextlib.contextmanager
def stop_on_interrupt(work_dir: Path | str) -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM stop the run as above (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; its owner handles them
        return
    handler = _on_interrupt(Path(work_dir).resolve())
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
