"""Candidate runs logged live, per epoch, against a real `mlflow server` (curves while training).

Each test trains a tiny model for a few epochs (about a second on a loaded 2-core box)
inside granvae.tracking.live's run, paused at an epoch where the test needs to look.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
from conftest import free_port
from live_fixtures import MODEL, OBJECTIVE, Pause, config, images, in_thread, train_live
from sweep_fixtures import fast_store, make_sweep, unique

from granvae.tracking import TrackingSettings, log_sweep
from granvae.tracking.live import LiveRun, live_run, live_store
from granvae.tracking.runs import LOGGED_EPOCH, SWEEP_RUN_ID, find_runs
from granvae.train import train


def _runs(store, experiment: str, cid: str):
    exp_id = store.experiment_id(experiment)
    return find_runs(store, exp_id, candidate_id=cid, role="candidate")


def _steps(store, run_id: str, key: str = "train/elbo") -> list[int]:
    return sorted(m.step for m in store.client.get_metric_history(run_id, key))


def test_run_is_running_and_its_curves_grow_while_training(mlflow_server, tmp_path):
    store, experiment = fast_store(mlflow_server, tmp_path), unique("live")
    pause = Pause(at=3)
    thread, box = in_thread(
        lambda: train_live(store, experiment, "sweep-a", "g2-live", tmp_path / "c", None, pause)
    )
    try:
        assert pause.reached.wait(60), box
        (run,) = _runs(store, experiment, "g2-live")  # one run, opened when training began
        assert run.info.status == "RUNNING"
        assert _steps(store, run.info.run_id) == [1, 2, 3]  # epochs 4..6 not trained yet
        assert _steps(store, run.info.run_id, "train/loss") == [1, 2, 3]
        assert run.data.params["granularity"] == "2"
    finally:
        pause.release()
        thread.join(60)
    assert box["result"].status == "finished"
    (run,) = _runs(store, experiment, "g2-live")
    assert run.info.status == "FINISHED"
    assert _steps(store, run.info.run_id) == [1, 2, 3, 4, 5, 6]
    assert run.data.tags[LOGGED_EPOCH] == "6"
    history = store.client.get_metric_history(run.info.run_id, "train/elbo")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        [h["elbo"] for h in box["result"].history]
    )
    assert run.info.end_time - run.info.start_time >= 0


def test_diverged_training_ends_failed_with_its_reason(mlflow_server, tmp_path):
    store, experiment = fast_store(mlflow_server, tmp_path), unique("live")
    result = train_live(store, experiment, "sweep-b", "g2-nan", tmp_path / "c", config(lr=1e12))
    assert result.status == "failed"
    (run,) = _runs(store, experiment, "g2-nan")
    assert run.info.status == "FAILED"
    assert run.data.tags["granvae.status"] == "failed"
    assert "non-finite" in run.data.tags["granvae.reason"]


def test_interrupt_ends_killed_and_the_rerun_reuses_the_run(mlflow_server, tmp_path):
    """Ctrl-C at epoch 2 (KILLED), then resume from the checkpoint: the same run goes on,
    RUNNING again, its curve continuing at step 3, no duplicate run and no repeated step."""
    store, experiment = fast_store(mlflow_server, tmp_path), unique("live")

    def ctrl_c(epoch: int, _terms: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_live(store, experiment, "sweep-c", "g2-int", tmp_path / "c", config(), ctrl_c)
    (killed,) = _runs(store, experiment, "g2-int")
    assert killed.info.status == "KILLED" and _steps(store, killed.info.run_id) == [1, 2]

    pause = Pause(at=4)
    thread, box = in_thread(
        lambda: train_live(store, experiment, "sweep-c", "g2-int", tmp_path / "c", None, pause)
    )
    try:
        assert pause.reached.wait(60), box
        (resumed,) = _runs(store, experiment, "g2-int")
        assert resumed.info.run_id == killed.info.run_id
        assert resumed.info.status == "RUNNING"
    finally:
        pause.release()
        thread.join(60)
    assert box["result"].resumed_from_epoch == 2
    (done,) = _runs(store, experiment, "g2-int")
    assert done.info.status == "FINISHED"
    assert _steps(store, done.info.run_id) == [1, 2, 3, 4, 5, 6]


def test_the_registration_completes_the_live_run(mlflow_server, tmp_path):
    """log_sweep after training: params, final metrics and artifacts land on the live run;
    the curves are not logged twice; the run stays top-level (the experiment opens on it),
    names its sweep run, and keeps the end time its training had."""
    sweep = make_sweep(tmp_path / "sweep", sweep_id="sweep-live-1")
    store, experiment = fast_store(mlflow_server, tmp_path), unique("live")
    cid = "g2-b4-d4-s0"
    history = json.loads((sweep / "candidates" / cid / "status.json").read_text())["history"]
    live = LiveRun(live_store(store.settings), experiment, "sweep-live-1", cid)
    live.open()
    for entry in history:
        live.on_epoch(int(entry["epoch"]), entry)
    live.end("FINISHED")
    ended = store.client.get_run(live.run_id).info.end_time
    time.sleep(0.01)

    logged = log_sweep(sweep, experiment, store=store)

    assert logged["children"][cid] == live.run_id
    assert len(_runs(store, experiment, cid)) == 1
    run = store.client.get_run(live.run_id)
    assert _steps(store, live.run_id) == [1, 2, 3]  # not [1, 1, 2, 2, 3, 3]
    assert run.data.metrics["recall_at_far"] == pytest.approx(0.83)
    assert run.data.params["granularity"] == "2"
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.tags[SWEEP_RUN_ID] == logged["parent_run_id"]
    assert run.info.status == "FINISHED" and run.info.end_time == ended
    assert {a.path for a in store.client.list_artifacts(live.run_id, "model")}


def test_a_dead_server_neither_stops_nor_slows_training(tmp_path, caplog):
    """Nothing listens at the tracking URI: training finishes, one warning is logged, and
    each epoch costs at most one quick refused connection."""
    store = fast_store(f"http://127.0.0.1:{free_port()}", tmp_path, attempts=1)
    caplog.set_level(logging.WARNING, logger="granvae.tracking.live")
    t0 = time.perf_counter()
    result = train_live(store, "live-down", "sweep-d", "g2-down", tmp_path / "c", config())
    seconds = time.perf_counter() - t0
    assert result.status == "finished" and result.epochs_completed == 6
    paused = [r for r in caplog.records if "paused" in r.getMessage()]
    assert len(paused) == 1, caplog.text
    assert seconds < 30, seconds


def test_epochs_missed_in_an_outage_are_sent_when_the_server_answers(
    killable_mlflow_server, tmp_path
):
    """The server dies after epoch 2 and is back after epoch 4: training never stops, and
    the epochs it missed are sent later, so the ended run's curve has every step once."""
    server = killable_mlflow_server
    store, experiment = fast_store(server.uri, tmp_path), unique("live")
    quick = live_store(store.settings.model_copy(update={"experiment": experiment}))

    def outage(epoch: int, _terms: dict) -> None:
        if epoch == 2:
            server.kill()
        if epoch == 4:
            server.restart()

    result = train_live(store, experiment, "sweep-e", "g2-out", tmp_path / "c", config(),
                        outage, quick_store=quick)  # fmt: skip
    assert result.status == "finished"
    (run,) = _runs(store, experiment, "g2-out")
    assert run.info.status == "FINISHED"
    assert _steps(store, run.info.run_id) == [1, 2, 3, 4, 5, 6]


def test_kill_9_leaves_a_running_run_that_the_resume_takes_over(mlflow_server, tmp_path):
    """kill -9 after epoch 2's checkpoint but before its log: the run is left RUNNING with
    step 1 only. The resumed training takes that run over (no second run), sends epoch 2
    from the checkpoint's history, and the run ends FINISHED with every step once."""
    store, experiment = fast_store(mlflow_server, tmp_path), unique("live")
    settings = store.settings.model_copy(update={"experiment": experiment})
    crashed = LiveRun(live_store(settings), experiment, "sweep-f", "g2-k9")
    crashed.open()
    first = lambda epoch, terms: crashed.on_epoch(epoch, terms) if epoch == 1 else None  # noqa: E731
    # no end() and no log of epoch 2: the process "died" right after epoch 2's checkpoint
    train(
        images(), MODEL, OBJECTIVE, config(epochs=2), tmp_path / "c", progress=False, on_epoch=first
    )
    (stale,) = _runs(store, experiment, "g2-k9")
    assert stale.info.status == "RUNNING" and _steps(store, stale.info.run_id) == [1]

    result = train_live(store, experiment, "sweep-f", "g2-k9", tmp_path / "c", config())

    assert result.resumed_from_epoch == 2
    (run,) = _runs(store, experiment, "g2-k9")
    assert run.info.run_id == stale.info.run_id and run.info.status == "FINISHED"
    assert _steps(store, run.info.run_id) == [1, 2, 3, 4, 5, 6]


def test_a_store_that_cannot_open_does_not_stop_training(tmp_path, caplog):
    """Opening the store itself fails (a sqlite file in a folder that is a file; in
    practice, workers migrating a fresh sqlite store at once): a warning, training goes on."""
    (tmp_path / "not-a-dir").write_text("x")
    settings = TrackingSettings(uri=f"sqlite:///{tmp_path / 'not-a-dir' / 'mlflow.db'}")
    caplog.set_level(logging.WARNING, logger="granvae.tracking.live")
    with live_run(settings, "sweep-g", "g2-nostore") as live:
        result = train(images(), MODEL, OBJECTIVE, config(epochs=2), tmp_path / "c",
                       progress=False, on_start=live.on_start, on_epoch=live.on_epoch)  # fmt: skip
        live.outcome = result.status
    assert result.status == "finished" and live.run_id is None
    assert "paused" in caplog.text


def test_sweep_track_logs_each_candidate_live(mlflow_server, tmp_path):
    """`granvae sweep --track`, the real CLI: a candidate's run is RUNNING with some, not
    all, of its epochs while the sweep trains (the process is stopped while the test looks),
    and the logging after the sweep completes that same run without repeating an epoch."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    from granvae.data import generate, write_dataset

    epochs, experiment = 120, unique("sweep-live")
    splits, meta = generate("surfaces", 64, 32, 32, 0, image_size=16)
    write_dataset(tmp_path / "data", splits, meta)
    params = {
        "model": {"arch": "mlp", "latent_dim": 4, "hidden": 32},
        "train": {"epochs": epochs, "batch_size": 32, "device": "cpu"},
        "sweep": {"granularities": [1, 2], "betas": [2.0], "seeds": [0], "workers": 1},
        "evaluation": {"disentanglement": False, "latency_repeats": 2, "iwae_k": 2,
                       "iwae_images": 8, "bootstrap": 100},
        "tracking": {"uri": mlflow_server, "experiment": experiment},
    }  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-c", "from granvae.cli import main; main()", "sweep", "--data",
           str(tmp_path / "data"), "--out", str(tmp_path / "sweep"), "--track"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    store = fast_store(mlflow_server, tmp_path)
    seen: tuple[str, list[int]] | None = None
    try:
        deadline = time.monotonic() + 240
        while seen is None and proc.poll() is None and time.monotonic() < deadline:
            found = store.client.get_experiment_by_name(experiment)
            runs = _runs(store, experiment, "g1-b2-d4-s0") if found else []
            if runs and _steps(store, runs[0].info.run_id):
                proc.send_signal(signal.SIGSTOP)  # hold the sweep still while we look
                run = store.client.get_run(runs[0].info.run_id)
                seen = run.info.status, _steps(store, run.info.run_id)
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert seen is not None, f"no candidate run had epochs while the sweep ran:\n{out[-3000:]}"
    status, steps = seen
    assert status == "RUNNING" and steps == list(range(1, len(steps) + 1)), seen
    assert len(steps) < epochs, f"all {epochs} epochs were there already: logged afterwards"
    assert proc.returncode == 0, out[-3000:]
    assert "training curves live in MLflow" in out and "workflowType=machine_learning" in out
    for cid in ("g1-b2-d4-s0", "g2-b2-d4-s0"):
        (run,) = _runs(store, experiment, cid)  # one run per candidate, completed
        assert run.info.status == "FINISHED"
        assert _steps(store, run.info.run_id) == list(range(1, epochs + 1))  # each epoch once
        assert "recall_at_far" in run.data.metrics
