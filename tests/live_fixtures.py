"""A tiny candidate trained inside its live MLflow run, optionally paused at an epoch.

Pausing (an Event the test releases) instead of racing a timer is what lets a test look
at the run while the training is provably still going, on a loaded machine too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from granvae.models import ModelConfig
from granvae.objectives import ObjectiveConfig
from granvae.tracking import Store
from granvae.tracking.live import live_run, live_store
from granvae.train import TrainConfig, TrainResult, train

MODEL = ModelConfig(arch="mlp", image_size=16, latent_dim=4, hidden=32)
OBJECTIVE = ObjectiveConfig(name="beta_stcvae", granularity=2, beta=2.0)
PARAMS = {"granularity": 2, "beta": 2.0, "latent_dim": 4, "seed": 7}


def images() -> np.ndarray:
    """Bright squares at random positions (as tests/test_train.py): seconds to train."""
    rng = np.random.default_rng(0)
    out = np.zeros((128, 1, 16, 16), dtype=np.uint8)
    for img, (x, y) in zip(out, rng.integers(0, 12, size=(128, 2)), strict=True):
        img[0, y : y + 4, x : x + 4] = 255
    return out


def config(**kw: Any) -> TrainConfig:
    return TrainConfig(**{"epochs": 6, "batch_size": 32, "lr": 3e-3, "seed": 7, **kw})


class Pause:
    """Stops training after epoch `at` until `release()`; `reached` is set once it waits."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.reached, self.go = threading.Event(), threading.Event()

    def __call__(self, epoch: int, _terms: dict) -> None:
        if epoch == self.at:
            self.reached.set()
            if not self.go.wait(timeout=120):
                raise TimeoutError("the test never released the paused training")

    def release(self) -> None:
        self.go.set()


def train_live(
    store: Store,
    experiment: str,
    sweep_id: str,
    candidate_id: str,
    out_dir: Path,
    cfg: TrainConfig | None = None,
    after_epoch: Callable[[int, dict], None] | None = None,
    quick_store: Store | None = None,
) -> TrainResult:
    """What pipelines.tasks.train_candidate does around run_candidate, on train() itself."""
    settings = store.settings.model_copy(update={"experiment": experiment})
    live_kw = {"store": quick_store or live_store(settings)}
    with live_run(settings, sweep_id, candidate_id, PARAMS, **live_kw) as live:

        def on_epoch(epoch: int, terms: dict) -> None:
            live.on_epoch(epoch, terms)
            if after_epoch:
                after_epoch(epoch, terms)

        result = train(
            images(), MODEL, OBJECTIVE, cfg or config(), out_dir, progress=False,
            on_start=live.on_start, on_epoch=on_epoch,
        )  # fmt: skip
        live.outcome, live.reason = result.status, result.reason
    return result


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run fn in a thread; its result or exception lands in the returned dict."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box
