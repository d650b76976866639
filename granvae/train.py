"""Training one candidate, top to bottom in one file.

A candidate runs on CUDA with bf16 autocast when a GPU is present and on the
CPU otherwise; it is seeded and bit-reproducible on the CPU, checkpoints every
epoch (atomically, so a kill -9 leaves the previous epoch intact), resumes from
the last checkpoint, and stops with a `failed` status instead of writing a
poisoned checkpoint when the loss or the weights stop being finite.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from granvae.distributions import kl_to_standard_normal, recon_nll_map
from granvae.models import FactorizedVAE, ModelConfig
from granvae.objectives import ObjectiveConfig, compute_terms
from granvae.schemas import AUGMENTS, TrainConfig  # noqa: F401 - re-exported, torch-free
from granvae.scoring.tiling import TilingConfig, random_tiles

CHECKPOINT_FILE = "checkpoint.pt"
STATUS_FILE = "status.json"
MODEL_DIR = "model"

# channels-last lets oneDNN pick its fast conv kernels: about 25% off a CPU step (measured).
MEMORY_FORMATS = {"conv": torch.channels_last, "mlp": torch.contiguous_format}

EpochCallback = Callable[[int, dict[str, float]], None]  # (epoch done, 1-based; its terms)
# (first epoch to train, 0-based; the history resumed from the checkpoint, [] when fresh)
StartCallback = Callable[[int, list[dict[str, float]]], None]


@dataclass
class TrainResult:
    status: str  # "finished" | "failed"
    reason: str | None
    epochs_completed: int
    resumed_from_epoch: int
    device: str
    seconds: float
    out_dir: str
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None  # the epoch whose weights were saved (early stopping)

    @property
    def model_dir(self) -> Path:
        return Path(self.out_dir) / MODEL_DIR


class NonFiniteError(RuntimeError):
    """The loss or the weights became NaN/inf: the candidate has diverged."""


def pick_device(spec: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else the CPU; never a hard-coded .cuda()."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asked for, but torch sees no CUDA device")
    return device


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _save_atomic(obj: object, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _write_status(out_dir: Path, result: TrainResult) -> None:
    tmp = out_dir / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(result), indent=2, default=str))
    tmp.replace(out_dir / STATUS_FILE)


def _load_checkpoint(path: Path, model: FactorizedVAE, optim: torch.optim.Optimizer) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optim.load_state_dict(state["optim"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state


def _augment(x: torch.Tensor, kinds: list[str], gen: torch.Generator) -> torch.Tensor:
    """Each image flipped (per kind) with probability 1/2; the label of a good part stays good."""
    for kind in kinds:
        flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)[:, None, None, None]
        dims = {"hflip": (-1,), "vflip": (-2,), "rot180": (-2, -1)}[kind]
        x = torch.where(flip, x.flip(dims), x)
    return x


def kl_weight(cfg: TrainConfig, epoch: int, step: int, steps: int) -> float:
    """Linear KL warm-up over ``kl_warmup_epochs`` (fractional epochs allowed)."""
    if cfg.kl_warmup_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + step / max(steps, 1)) / cfg.kl_warmup_epochs)


def _run_epoch(
    model: FactorizedVAE,
    optim: torch.optim.Optimizer,
    data: torch.Tensor,
    objective: ObjectiveConfig,
    cfg: TrainConfig,
    epoch: int,
    device: torch.device,
    advance: Callable[[], None],
) -> dict[str, float]:
    """One pass over the data; returns the epoch means of every named term."""
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 9973 + epoch)
    order = torch.randperm(len(data), generator=gen)
    steps = len(data) // cfg.batch_size
    sums: dict[str, float] = {}
    n_batches = 0
    for step, start in enumerate(range(0, len(data) - cfg.batch_size + 1, cfg.batch_size)):
        x = data[order[start : start + cfg.batch_size]].to(device).float().div_(255.0)
        x = _augment(x, cfg.augment, gen)
        x = x.contiguous(memory_format=MEMORY_FORMATS[model.config.arch])
        with _autocast(device):
            out = model(x)
        terms = compute_terms(x, out, model.config, objective, dataset_size=len(data))
        if not torch.isfinite(terms["loss"]):
            values = {k: float(v) for k, v in terms.items()}
            raise NonFiniteError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {values}")
        w = kl_weight(cfg, epoch, step, steps)
        loss = terms["loss"] if w == 1.0 else terms["recon"] + w * (terms["loss"] - terms["recon"])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_batches += 1
        advance()
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise NonFiniteError(f"non-finite weights after epoch {epoch + 1}")
    return {k: v / n_batches for k, v in sums.items()}


@torch.no_grad()
def held_out_neg_elbo(model: FactorizedVAE, images: torch.Tensor, device: torch.device) -> float:
    """Mean negative ELBO at z = mu (deterministic) on held-out good images: early stopping's
    yardstick, comparable epoch to epoch because no sampling noise enters it."""
    model.eval()
    total = 0.0
    for start in range(0, len(images), 256):
        x = images[start : start + 256].to(device).float().div_(255.0)
        x = x.contiguous(memory_format=MEMORY_FORMATS[model.config.arch])
        mu, logvar = model.encode(x)
        cfg = model.config
        nll = recon_nll_map(cfg.likelihood, x, model.decode(mu).float(), cfg.obs_std)
        total += float(nll.flatten(1).sum(1).sum() + kl_to_standard_normal(mu, logvar).sum())
    return total / len(images)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


class _Best:
    """Early stopping's memory: the best held-out epoch and its weights (checkpointed too,
    so a resumed run stops where an uninterrupted one would)."""

    def __init__(self, patience: int | None, val: torch.Tensor | None, state: dict | None):
        self.patience, self.val = patience, val
        state = state or {}
        self.value = state.get("value", math.inf)
        self.epoch = state.get("epoch", 0)
        self.weights = state.get("weights")

    @property
    def active(self) -> bool:
        return self.patience is not None and self.val is not None and len(self.val) > 0

    def update(self, model: FactorizedVAE, epoch: int, device: torch.device) -> float | None:
        if not self.active:
            return None
        value = held_out_neg_elbo(model, self.val, device)
        if value < self.value:
            self.value, self.epoch = value, epoch
            self.weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return value

    def should_stop(self, epoch: int) -> bool:
        return self.active and epoch - self.epoch >= self.patience

    def state(self) -> dict:
        return {"value": self.value, "epoch": self.epoch, "weights": self.weights}


class _TileSampler:
    """What the model sees of each image: the whole image, or random tiles of it."""

    def __init__(self, tiling: TilingConfig | None, seed: int) -> None:
        self.tile = None if tiling is None else tiling.tile
        self.per_image = 1 if self.tile is None else tiling.tiles_per_image
        self.seed = seed

    def check(self, images: np.ndarray, model_cfg: ModelConfig) -> np.ndarray:
        side = images.shape[-1] if self.tile is None else self.tile
        if model_cfg.image_size != side:
            what = "images" if self.tile is None else "tiles"
            raise ValueError(f"model image_size {model_cfg.image_size} but the {what} are "
                             f"{side} px")  # fmt: skip
        return images

    def epoch(self, data: torch.Tensor, epoch: int) -> torch.Tensor:
        if self.tile is None:
            return data
        gen = torch.Generator().manual_seed(self.seed * 7919 + epoch + 1)
        return random_tiles(data, self.tile, self.per_image, gen)

    def held_out(self, images: np.ndarray) -> torch.Tensor:
        val = torch.from_numpy(np.ascontiguousarray(images))
        if self.tile is None:
            return val
        return random_tiles(val, self.tile, self.per_image, torch.Generator().manual_seed(0))


def train(
    images: np.ndarray,
    model_cfg: ModelConfig,
    objective: ObjectiveConfig,
    cfg: TrainConfig,
    out_dir: Path | str,
    resume: bool = True,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    val_images: np.ndarray | None = None,
    tiling: TilingConfig | None = None,
    on_start: StartCallback | None = None,
) -> TrainResult:
    """Train on uint8 (N, C, H, W) good images; write checkpoint, model and status to out_dir.

    With ``cfg.early_stop_patience`` and ``val_images`` the saved model is the epoch with
    the best held-out negative ELBO, and training stops after ``patience`` epochs without
    improvement. With ``tiling.tile`` set the model trains on ``tiles_per_image`` random
    tiles of each image, drawn afresh every epoch (the held-out tiles are drawn once).

    ``on_start`` and ``on_epoch`` let a caller watch training without this module knowing
    who watches (the retrain flow logs live MLflow curves through them): ``on_start`` once
    before the first epoch with the history a resumed checkpoint brought back, ``on_epoch``
    after each epoch's checkpoint is on disk.
    """
    tiles = _TileSampler(tiling, cfg.seed)
    images = tiles.check(images, model_cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(images) * tiles.per_image < cfg.batch_size:
        raise ValueError(f"{len(images)} training images x {tiles.per_image} tiles is fewer "
                         f"than batch_size {cfg.batch_size}")  # fmt: skip
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = FactorizedVAE(model_cfg)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict[str, float]] = []
    start_epoch, best_state = 0, None
    ckpt = out_dir / CHECKPOINT_FILE
    if resume and ckpt.exists():
        state = _load_checkpoint(ckpt, model, optim)
        start_epoch, history, best_state = state["epoch"], state["history"], state.get("best")
    val = None if val_images is None else tiles.held_out(val_images)
    best = _Best(cfg.early_stop_patience, val, best_state)
    model.to(device, memory_format=MEMORY_FORMATS[model_cfg.arch])
    data = torch.from_numpy(np.ascontiguousarray(images))
    result = TrainResult("finished", None, start_epoch, start_epoch, str(device), 0.0, str(out_dir))
    steps = len(data) * tiles.per_image // cfg.batch_size
    if on_start:
        on_start(start_epoch, [dict(h) for h in history])
    t0 = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task(
            out_dir.name, total=steps * cfg.epochs, completed=steps * start_epoch, status=""
        )
        for epoch in range(start_epoch, cfg.epochs):
            try:
                terms = _run_epoch(
                    model, optim, tiles.epoch(data, epoch), objective, cfg, epoch, device,
                    lambda: bar.advance(task),
                )  # fmt: skip
            except NonFiniteError as err:
                result.status, result.reason = "failed", str(err)
                break
            held_out = best.update(model, epoch + 1, device)
            if held_out is not None:
                terms["val_neg_elbo"] = held_out
            history.append({"epoch": epoch + 1, **terms})
            bar.update(task, status=f"elbo {terms['elbo']:.1f}")
            state = {
                "model": model.state_dict(),
                "optim": optim.state_dict(),
                "epoch": epoch + 1,
                "history": history,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                "best": best.state(),
            }
            _save_atomic(state, ckpt)
            result.epochs_completed = epoch + 1
            if on_epoch:
                on_epoch(epoch + 1, terms)
            if best.should_stop(epoch + 1):
                break
    result.seconds = time.perf_counter() - t0
    result.history = history
    if result.status == "finished":
        if best.active and best.weights is not None:
            model.load_state_dict(best.weights)
            result.best_epoch = best.epoch
        model.to("cpu").save(out_dir / MODEL_DIR)
    _write_status(out_dir, result)
    return result


def read_status(out_dir: Path | str) -> dict | None:
    """The status.json a finished or failed run left, or None if it never got that far."""
    path = Path(out_dir) / STATUS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def final_terms(result: TrainResult) -> dict[str, float]:
    """Last epoch's terms, NaN-filled when the run failed before finishing one."""
    return dict(result.history[-1]) if result.history else {"elbo": math.nan}
