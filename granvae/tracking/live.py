"""A candidate's MLflow run while it trains: opened at the start, one batch per epoch.

Why: runs logged after training had durations of a second and no curves until the whole
sweep was registered. Here the run is RUNNING from the first epoch, each epoch's terms
(`train/<term>`, step = epoch, the held-out ELBO when early stopping measures it) go in
one `log_batch` call, and the run ends FINISHED, FAILED (a diverged or crashed candidate)
or KILLED (Ctrl-C, SIGTERM). The post-training logging (granvae.tracking.runs) finds this
same run by its tags and completes it; it skips the epochs the tag `granvae.logged_epoch`
says are already there, so no step appears twice.

Tracking must never cost a training: every call here is tried at most twice (a 5-s
timeout, 0.1 s apart); a failure logs one warning, keeps the unsent epochs and waits
`retry_after_s` before trying again, and the epochs go out with the next batch that gets
through.

Resume (a crash, a kill -9, Ctrl-C then a rerun): the candidate's run is found again by
its tags and *reused* (set RUNNING again), never duplicated: one run per candidate, its
curve continuing from the checkpoint's epoch; the epochs a crash kept from being logged
are sent from the checkpoint's history at the start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from granvae.tracking.runs import (
    CANDIDATE_ID,
    LOGGED_EPOCH,
    ROLE,
    SWEEP_ID,
    epoch_metrics,
    get_or_create,
)
from granvae.tracking.store import Store, TrackingSettings

log = logging.getLogger(__name__)
MAX_PENDING_EPOCHS = 10_000  # unsent epochs kept through an outage (a few MB at most)
BATCH_LIMIT = 1000  # MLflow's metrics-per-log_batch limit


def live_store(settings: TrackingSettings) -> Store:
    """The settings' store with a short timeout and one quick retry (a sqlite file shared
    by the sweep's worker processes may be locked for a moment): an epoch never waits long."""
    quick = {"attempts": 2, "backoff_s": 0.1, "max_backoff_s": 0.1,
             "http_timeout_s": min(settings.http_timeout_s, 5)}  # fmt: skip
    return Store(settings.model_copy(update=quick))


class LiveRun:
    """One candidate's run, logged while it trains. Every method swallows tracking errors."""

    def __init__(
        self,
        store: Store | Callable[[], Store],
        experiment: str,
        sweep_id: str,
        candidate_id: str,
        params: dict[str, Any] | None = None,
        retry_after_s: float = 30.0,
    ) -> None:
        # A factory is called on first use, inside the error handling: opening a store can
        # fail too (a fresh sqlite file that several workers migrate at once).
        self._store, self.experiment = store, experiment
        self.sweep_id, self.candidate_id = sweep_id, candidate_id
        self.params = params or {}
        self.retry_after_s = retry_after_s
        self.run_id: str | None = None
        self.logged_epoch = 0  # the last epoch the server has
        self.outcome: str | None = None  # "finished" | "failed", set by the caller
        self.reason: str | None = None
        self._pending: dict[int, list[Metric]] = {}  # epoch -> its metrics, not yet sent
        self._quiet_until = 0.0
        self._down = False

    @property
    def store(self) -> Store:
        if not isinstance(self._store, Store):
            self._store = self._store()
        return self._store

    # -- the server, tried briefly, never raising ----------------------------------------
    def _try(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> bool:
        if time.monotonic() < self._quiet_until:
            return False
        try:
            self.store.call(what, fn, *args, **kwargs)  # the store itself may fail to open
        except Exception as err:  # noqa: BLE001 - tracking must never stop a training
            if not self._down:
                log.warning(
                    "MLflow live logging of %s paused (%s: %s); training goes on, the "
                    "epochs are sent once the server answers (next try in %.0f s)",
                    self.candidate_id, type(err).__name__, str(err)[:200], self.retry_after_s,
                )  # fmt: skip
            self._down, self._quiet_until = True, time.monotonic() + self.retry_after_s
            return False
        if self._down:
            log.warning("MLflow live logging of %s resumed", self.candidate_id)
        self._down = False
        return True

    def _open(self) -> bool:
        """Find (resume) or create the run and mark it RUNNING; True once it exists."""
        if self.run_id is not None:
            return True
        if time.monotonic() < self._quiet_until:
            return False
        tags = {SWEEP_ID: self.sweep_id, CANDIDATE_ID: self.candidate_id, ROLE: "candidate"}
        found: dict[str, Any] = {}

        def open_run() -> None:
            exp_id = self.store.experiment_id(self.experiment)
            found["run"], _ = get_or_create(self.store, exp_id, tags, self.candidate_id)

        if not self._try("open run", open_run):
            return False
        run = found["run"]
        self.run_id = run.info.run_id
        self.logged_epoch = int(run.data.tags.get(LOGGED_EPOCH) or 0)
        client = self.store.client
        if run.info.status != "RUNNING":  # a rerun after Ctrl-C or a failure: reuse it
            self._try("reopen run", client.update_run, self.run_id, "RUNNING")
        have = run.data.params
        new = [Param(k, str(v)[:6000]) for k, v in self.params.items()
               if v is not None and k not in have]  # fmt: skip
        if new:
            self._try("log params", client.log_batch, self.run_id, params=new)
        return True

    def _flush(self) -> None:
        """Send the unsent epochs, whole epochs per call, in order; the tag follows."""
        if not self._pending or not self._open():
            return
        while self._pending:
            batch: list[Metric] = []
            last = self.logged_epoch
            for epoch in sorted(self._pending):
                if batch and len(batch) + len(self._pending[epoch]) > BATCH_LIMIT:
                    break
                batch.extend(self._pending[epoch])
                last = epoch
            tag = [RunTag(LOGGED_EPOCH, str(max(last, self.logged_epoch)))]
            if not self._try("log epoch", self.store.client.log_batch, self.run_id,
                             metrics=batch, tags=tag):  # fmt: skip
                return
            for epoch in [e for e in self._pending if e <= last]:
                del self._pending[epoch]
            self.logged_epoch = max(last, self.logged_epoch)

    def _queue(self, epoch: int, terms: dict[str, Any]) -> None:
        if epoch <= self.logged_epoch and self.run_id is not None:
            return
        self._pending[epoch] = epoch_metrics(epoch, terms, int(time.time() * 1000))
        while len(self._pending) > MAX_PENDING_EPOCHS:
            del self._pending[min(self._pending)]

    # -- train()'s callbacks ----------------------------------------------------------------
    def open(self) -> None:
        """Create (or find again) the run now: RUNNING before the first epoch ends."""
        self._open()

    def on_start(self, start_epoch: int, history: list[dict[str, float]]) -> None:
        """A resumed training: send the checkpoint's epochs the server does not have yet."""
        self._open()
        for entry in history:
            epoch = int(entry.get("epoch", 0))
            if epoch > self.logged_epoch:
                self._queue(epoch, entry)
        self._flush()

    def on_epoch(self, epoch: int, terms: dict[str, float]) -> None:
        """One epoch done: its terms in one log_batch call (with any epochs still unsent)."""
        self._queue(epoch, terms)
        self._flush()

    def end(self, status: str) -> None:
        """FINISHED | FAILED | KILLED, after a last try at the unsent epochs."""
        self._quiet_until = 0.0  # the end is worth one more try
        self._flush()
        if self.run_id is None:
            return
        tags = {"granvae.status": self.outcome or status.lower(), "granvae.reason": self.reason}
        batch = [RunTag(k, str(v)[:8000]) for k, v in tags.items() if v]
        self._try("tag run", self.store.client.log_batch, self.run_id, tags=batch)
        self._quiet_until = 0.0
        self._try("end run", self.store.client.set_terminated, self.run_id, status)


@contextlib.contextmanager
def _sigterm_ends(live: LiveRun) -> Iterator[None]:
    """In the main thread: a SIGTERM ends the run KILLED, then kills the process as the
    default action would have (the retrain CLI stops its workers with SIGTERM)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        signal.signal(signum, signal.SIG_DFL)
        live.end("KILLED")
        os.kill(os.getpid(), signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def live_run(
    settings: TrackingSettings,
    sweep_id: str,
    candidate_id: str,
    params: dict[str, Any] | None = None,
    store: Store | None = None,
) -> Iterator[LiveRun]:
    """The candidate's run for the duration of the block (see the module docstring).

    Set ``outcome`` ("finished"/"failed") and ``reason`` on the yielded LiveRun before the
    block ends; an exception ends the run FAILED, a KeyboardInterrupt KILLED (and goes on).
    """
    live = LiveRun(store or (lambda: live_store(settings)), settings.experiment, sweep_id,
                   candidate_id, params)  # fmt: skip
    live.open()
    try:
        with _sigterm_ends(live):
            yield live
    except KeyboardInterrupt:
        live.end("KILLED")
        raise
    except Exception as err:
        live.outcome, live.reason = "failed", f"{type(err).__name__}: {err}"
        live.end("FAILED")
        raise
    live.end("FINISHED" if live.outcome in (None, "finished") else "FAILED")
