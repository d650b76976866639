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
from pydantic import BaseModel, Field
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from granvae.models import FactorizedVAE, ModelConfig
from granvae.objectives import ObjectiveConfig, compute_terms

CHECKPOINT_FILE = "checkpoint.pt"
STATUS_FILE = "status.json"
MODEL_DIR = "model"

# channels-last lets oneDNN pick its fast conv kernels: about 25% off a CPU step (measured).
MEMORY_FORMATS = {"conv": torch.channels_last, "mlp": torch.contiguous_format}

EpochCallback = Callable[[int, dict[str, float]], None]


class TrainConfig(BaseModel):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(1e-3, gt=0)
    seed: int = 0
    device: str = Field("auto", pattern="^(auto|cpu|cuda(:[0-9]+)?)$")
    num_threads: int | None = Field(None, ge=1)


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
    order = torch.randperm(
        len(data), generator=torch.Generator().manual_seed(cfg.seed * 9973 + epoch)
    )
    sums: dict[str, float] = {}
    n_batches = 0
    for step, start in enumerate(range(0, len(data) - cfg.batch_size + 1, cfg.batch_size)):
        x = data[order[start : start + cfg.batch_size]].to(device).float().div_(255.0)
        x = x.contiguous(memory_format=MEMORY_FORMATS[model.config.arch])
        with _autocast(device):
            out = model(x)
        terms = compute_terms(x, out, model.config, objective, dataset_size=len(data))
        if not torch.isfinite(terms["loss"]):
            values = {k: float(v) for k, v in terms.items()}
            raise NonFiniteError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {values}")
        optim.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optim.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_batches += 1
        advance()
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise NonFiniteError(f"non-finite weights after epoch {epoch + 1}")
    return {k: v / n_batches for k, v in sums.items()}


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def train(
    images: np.ndarray,
    model_cfg: ModelConfig,
    objective: ObjectiveConfig,
    cfg: TrainConfig,
    out_dir: Path | str,
    resume: bool = True,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train on uint8 (N, C, H, W) good images; write checkpoint, model and status to out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(images) < cfg.batch_size:
        raise ValueError(f"{len(images)} training images is fewer than batch_size {cfg.batch_size}")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = FactorizedVAE(model_cfg)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict[str, float]] = []
    start_epoch = 0
    ckpt = out_dir / CHECKPOINT_FILE
    if resume and ckpt.exists():
        state = _load_checkpoint(ckpt, model, optim)
        start_epoch, history = state["epoch"], state["history"]
    model.to(device, memory_format=MEMORY_FORMATS[model_cfg.arch])
    data = torch.from_numpy(np.ascontiguousarray(images))
    result = TrainResult("finished", None, start_epoch, start_epoch, str(device), 0.0, str(out_dir))
    steps = len(data) // cfg.batch_size
    t0 = time.perf_counter()
    with _progress(progress) as bar:
        task = bar.add_task(
            out_dir.name, total=steps * cfg.epochs, completed=steps * start_epoch, status=""
        )
        for epoch in range(start_epoch, cfg.epochs):
            try:
                terms = _run_epoch(
                    model, optim, data, objective, cfg, epoch, device, lambda: bar.advance(task)
                )
            except NonFiniteError as err:
                result.status, result.reason = "failed", str(err)
                break
            history.append({"epoch": epoch + 1, **terms})
            bar.update(task, status=f"elbo {terms['elbo']:.1f}")
            state = {
                "model": model.state_dict(),
                "optim": optim.state_dict(),
                "epoch": epoch + 1,
                "history": history,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            }
            _save_atomic(state, ckpt)
            result.epochs_completed = epoch + 1
            if on_epoch:
                on_epoch(epoch + 1, terms)
    result.seconds = time.perf_counter() - t0
    result.history = history
    if result.status == "finished":
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
